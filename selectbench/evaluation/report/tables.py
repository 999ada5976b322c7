"""Tables of the report: utility with intervals, best-or-tied marks, the noise floor per metric,
dataset statistics, and every scalar of every replicate in one flat table."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from selectbench.evaluation import accuracy as M
from selectbench.evaluation import stats
from selectbench.evaluation.report.runs import UTILITY, Shift


def _get(d, *path, default=float("nan")):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return default if d is None else d


def intervals(runs: dict[str, Shift], confidence: float) -> dict[str, dict[str, stats.Interval]]:
    """shift -> metric -> interval over replicates and test items (absent where not measured)."""
    out = {}
    for s, sh in runs.items():
        out[s] = {}
        for m in UTILITY:
            sc = sh.scores(m)
            if sc is not None:
                out[s][m] = stats.interval(sc[0], sc[1], confidence)
    return _relative_to_in(runs, out, confidence)


def _relative_to_in(runs, out, confidence):
    """mCE and per-class Spearman against `in`, replicate by replicate (same seed)."""
    base = runs.get("in")
    if base is None or not base.trained:
        return out
    err_in = {r: np.asarray(base.evals[r]["corruption"]["error_table"], dtype=float) for r in base.trained}
    for s, sh in runs.items():
        reps = [r for r in sh.trained if r in err_in]
        mce, rho = [], []
        for r in reps:
            m = sh.evals[r]
            defined = err_in[r].sum(axis=1) > 0  # a corruption `in` never errs on has no CE (x/0)
            table = np.asarray(m["corruption"]["error_table"], dtype=float)
            if defined.any():
                mce.append(M.corruption_error(table[defined], err_in[r][defined]))
            rho.append(M.spearman(np.asarray(m["per_class_accuracy"], float),
                                  np.asarray(base.evals[r]["per_class_accuracy"], float)))
        for name, vals in (("mCE_vs_in", mce), ("spearman_vs_in", rho)):
            vals = [v for v in vals if math.isfinite(v)]
            if vals:
                out[s][name] = stats.interval(np.asarray(vals)[:, None], None, confidence, items=False)
    return out


def best_marks(runs: dict[str, Shift], ivs: dict, confidence: float) -> dict[str, dict]:
    """metric -> {"best": shift or None, "tied": [shifts]}: the shift with the highest mean is
    marked best only when a paired comparison (same seeds, same test items) puts it above the
    runner-up; otherwise it and every shift not significantly below it are tied."""
    out = {}
    for m, (_, higher) in UTILITY.items():
        have = [s for s in ivs if m in ivs[s] and not runs[s].control]
        if len(have) < 2:
            out[m] = {"best": have[0] if have else None, "tied": []}
            continue
        order = sorted(have, key=lambda s: -ivs[s][m].mean if higher else ivs[s][m].mean)
        top = order[0]
        tied = []
        for s in order[1:]:
            d = paired(runs[top], runs[s], m, confidence)
            if not (d is not None and d.complete and (d.lo > 0 if higher else d.hi < 0)):
                tied.append(s)
        out[m] = {"best": None if tied else top, "tied": [top] + tied if tied else []}
    return out


def paired(a: Shift, b: Shift, metric: str, confidence: float) -> stats.Interval | None:
    """metric(a) - metric(b) over the replicates both trained, item by item."""
    reps = [r for r in a.trained if r in b.trained]
    if not reps:
        return None
    sa, sb = a.scores(metric, reps), b.scores(metric, reps)
    if sa is None or sb is None or sa[0].shape != sb[0].shape:
        return None
    return stats.paired(sa[0], sb[0], sa[1], confidence)


def quantity_curves(runs: dict[str, Shift], ivs: dict, confidence: float, metric: str = "top1") -> pd.DataFrame:
    """SELECT's open question 1 on the data-quantity shifts (`<parent>_q<pct>`, seeded fractions of
    <parent>): per point, its size and metric with interval, the paired gain over the next smaller
    point (same seeds, same test items) and that gain per 1,000 images, and per parent the knee:
    the smallest point that no larger point of its curve beats by a paired interval above 0 (the
    largest point when every step still gains: the curve may rise beyond it)."""
    curves: dict[str, list[str]] = {}
    for s, sh in runs.items():
        if "_q" in s and sh.data and "subsample" in sh.data.get("dataset", {}) and s.rsplit("_q", 1)[0] in runs:
            curves.setdefault(s.rsplit("_q", 1)[0], []).append(s)
    rows = []
    for parent, kids in curves.items():
        pts = sorted((s for s in kids + [parent] if runs[s].data and metric in ivs.get(s, {})),
                     key=lambda s: runs[s].data["images"])
        knee = None
        beats = {(q, s): paired(runs[q], runs[s], metric, confidence) for i, s in enumerate(pts) for q in pts[i + 1:]}
        if all(iv is not None and iv.complete for iv in beats.values()):  # else (1 replicate): no knee is claimed
            knee = next(s for i, s in enumerate(pts) if not any(beats[q, s].lo > 0 for q in pts[i + 1:]))
        for i, s in enumerate(pts):
            iv, n = ivs[s][metric], runs[s].data["images"]
            row = {"parent": parent, "shift": s, "images": n, metric: iv.mean, "lo": iv.lo, "hi": iv.hi,
                   "gain": np.nan, "gain_lo": np.nan, "gain_hi": np.nan, "gain_per_1k": np.nan, "knee": s == knee}
            if i:
                g = paired(runs[s], runs[pts[i - 1]], metric, confidence)
                dn = n - runs[pts[i - 1]].data["images"]
                if g is not None:
                    row.update(gain=g.mean, gain_lo=g.lo, gain_hi=g.hi,
                               gain_per_1k=g.mean / (dn / 1000) if dn > 0 else np.nan)
            rows.append(row)
    cols = ["parent", "shift", "images", metric, "lo", "hi", "gain", "gain_lo", "gain_hi", "gain_per_1k", "knee"]
    return pd.DataFrame(rows, columns=cols)


def utility_table(runs: dict[str, Shift], ivs: dict) -> pd.DataFrame:
    """One row per shift: each metric's mean, interval and replicate count, plus dataset-side
    columns that have no replicates (estimated label noise, image quality) and the curation cost."""
    rows = []
    for s, sh in runs.items():
        row = {"shift": s, "status": sh.status, "replicates": len(sh.trained)}
        for m in list(UTILITY) + ["mCE_vs_in", "spearman_vs_in"]:
            iv = ivs[s].get(m)
            row[m] = np.nan if iv is None else iv.mean
            row[f"{m}_lo"] = np.nan if iv is None or not iv.complete else iv.lo
            row[f"{m}_hi"] = np.nan if iv is None or not iv.complete else iv.hi
            row[f"{m}_sd"] = np.nan if iv is None else iv.sd
        d = sh.data or {}
        row.update({"noise": _get(d, "label_noise", "estimated"), "noise_exact": _get(d, "label_noise", "exact"),
                    "inception_score": _get(d, "quality", "inception_score"), "cmmd": _get(d, "quality", "cmmd"),
                    "cmmd_floor": _get(d, "quality", "cmmd_floor"),
                    "curate_s": sh.costs.get("curate", {}).get("wall_s", np.nan)})
        rows.append(row)
    return pd.DataFrame(rows).set_index("shift")


def noise_floor(runs: dict[str, Shift], ivs: dict, confidence: float) -> pd.DataFrame:
    """Per metric: the spread between `in`'s replicates (the floor), the half-width of a paired
    comparison with `in`'s weakest rival, and the range from `in` to the weakest shift: a metric
    whose range is not well above its floor cannot rank shifts."""
    rows = []
    for m, (label, higher) in UTILITY.items():
        have = {s: ivs[s][m] for s in ivs if m in ivs[s] and not runs[s].control}
        if "in" not in have or len(have) < 2:
            continue
        weakest = (min if higher else max)((s for s in have if s != "in"), key=lambda s: have[s].mean)
        d = paired(runs["in"], runs[weakest], m, confidence)
        half = d.half() if d is not None else np.nan
        rng = abs(have["in"].mean - have[weakest].mean)
        rows.append({"metric": m, "label": label, "in_sd_between_replicates": have["in"].sd,
                     "in_half_width": have["in"].half(), "in_test_items_half_width": have["in"].item_half,
                     "weakest": weakest, "range_in_to_weakest": rng,
                     "paired_half_width": half, "range_over_half_width": rng / half if half and half > 0 else np.nan})
    return pd.DataFrame(rows).set_index("metric") if rows else pd.DataFrame()


def pareto(cost: np.ndarray, utility: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates (cost <= and utility >=, one of them strictly):
    the frontier of utility for the cost. NaN points are never on it."""
    cost, utility = np.asarray(cost, float), np.asarray(utility, float)
    ok = np.isfinite(cost) & np.isfinite(utility)
    out = np.zeros(len(cost), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & (np.arange(len(cost)) != i)
        dom = others & (cost <= cost[i]) & (utility >= utility[i]) & ((cost < cost[i]) | (utility > utility[i]))
        out[i] = not dom.any()
    return out


def cost_table(runs: dict[str, Shift], ivs: dict, shared: dict[str, dict]) -> pd.DataFrame:
    """Per shift: measured compute (its curation, the mean training wall time of its replicates and
    an equal share of every upstream stage it needs among the shifts of this run that need it),
    the human labour it assumes per image and its yes/no judgements per kept image (docs/labour.md),
    the low/high bin (high: any human labour per image) and
    whether it lies on the top-1-for-compute Pareto frontier (controls excluded)."""
    from selectbench.curation.upstream import EMBEDDING_OPTIONS, LABOUR, upstream

    needs = {}
    for s, sh in runs.items():
        d = (sh.data or {}).get("dataset", {})
        if "strategy" in d:
            needs[s] = upstream(d["strategy"], any(k in d for k in EMBEDDING_OPTIONS))
    users = {u: sum(u in n for n in needs.values()) for u in shared}
    rows = []
    for s, sh in runs.items():
        d = (sh.data or {}).get("dataset", {})
        train_s = [c["wall_s"] for k, c in sh.costs.items() if k.startswith("train_") and "wall_s" in c]
        ups = needs.get(s, ())
        missing = [u for u in ups if u not in shared]
        share = sum(shared[u]["wall_s"] / users[u] for u in ups if u in shared)
        curate = sh.costs.get("curate", {}).get("wall_s", np.nan)
        train = float(np.mean(train_s)) if train_s else np.nan
        labour, (lo, hi) = LABOUR.get(d.get("strategy"), (None, (0, 0)))
        iv = ivs.get(s, {}).get("top1")
        rows.append({"shift": s, "compute_s": np.nan if missing else curate + train + share, "curate_s": curate,
                     "train_s": train, "upstream_share_s": share, "upstream": "+".join(ups) or "none",
                     "labour_per_image": labour or "none", "judgements_lo": lo, "judgements_hi": hi,
                     "bin": "high" if labour else "low",
                     "top1": np.nan if iv is None else iv.mean, "control": sh.control})
    df = pd.DataFrame(rows).set_index("shift")
    rival = ~df["control"].astype(bool)
    front = np.zeros(len(df), dtype=bool)
    front[rival.to_numpy()] = pareto(df.loc[rival, "compute_s"].to_numpy(), df.loc[rival, "top1"].to_numpy())
    df["pareto"] = front
    return df


def dataset_table(runs: dict[str, Shift]) -> pd.DataFrame:
    rows = []
    for s, sh in runs.items():
        d = (sh.data or {}).get("dataset", {})
        train_s = [c["wall_s"] for k, c in sh.costs.items() if k.startswith("train_") and "wall_s" in c]
        rows.append({"shift": s, "images": d.get("images", np.nan), "matched_from": d.get("matched_from", np.nan),
                     "coverage": d.get("coverage", np.nan),
                     "classes_below_tail": _get(d, "long_tail", "classes_below"),
                     "tail_image_share": _get(d, "long_tail", "share_of_images_in_tail_classes"),
                     "min": d.get("min", np.nan), "median": d.get("median", np.nan), "max": d.get("max", np.nan),
                     "gini": d.get("gini", np.nan), "label_precision": d.get("label_precision", np.nan),
                     "curate_wall_s": sh.costs.get("curate", {}).get("wall_s", np.nan),
                     "curate_cpu_s": sh.costs.get("curate", {}).get("cpu_s", np.nan),
                     "train_wall_s": float(np.mean(train_s)) if train_s else np.nan})
    df = pd.DataFrame(rows).set_index("shift")
    for c in ("images", "matched_from", "coverage", "classes_below_tail", "min", "max"):
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    return df


def flat_table(runs: dict[str, Shift]) -> pd.DataFrame:
    """Every scalar of every replicate in one row per (shift, replicate): the dataset record and the
    replicate's metrics record flattened to dotted columns (per-class lists as <name>.<i>, matrices
    left to the JSON) and the stage costs as cost.<record>.<field>. A replicate without metrics is
    a row with status 'missing', never dropped."""
    def walk(prefix, v, row):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x, row)
        elif isinstance(v, list):
            if all(x is None or isinstance(x, (int, float)) for x in v):
                for i, x in enumerate(v):
                    row[f"{prefix}.{i}"] = np.nan if x is None else x
        elif isinstance(v, (int, float, str, bool)) or v is None:
            row[prefix] = np.nan if v is None else v

    rows = []
    for s, sh in runs.items():
        for r, m in sh.evals.items():
            row = {"shift": s, "replicate": r, "status": "missing"}
            walk("data", sh.data or {}, row)
            walk("", m or {}, row)
            walk("cost", {k: c for k, c in sh.costs.items() if k.rsplit("_", 1)[-1] not in sh.evals or k.endswith(f"_{r}")},
                 row)
            row["shift"], row["replicate"] = s, r
            rows.append(row)
    return pd.DataFrame(rows).set_index(["shift", "replicate"])


def _fmt(v, digits=3):
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def cell(iv: stats.Interval | None, digits: int = 3) -> str:
    """`mean ± half-width` (the 95% interval is symmetric), or the mean with why there is none."""
    if iv is None:
        return "missing"
    if not iv.complete:
        return f"{iv.mean:.{digits}f} (n={iv.n}, no interval)"
    return f"{iv.mean:.{digits}f} ± {iv.half():.{digits}f}"


def markdown(df: pd.DataFrame, cols: list[str], cells: dict | None = None, marks: dict | None = None) -> str:
    """A Markdown table of df[cols]; `cells[shift][col]` overrides a cell's text; `marks[col]` bolds
    the clear best and daggers the tied ones."""
    cells, marks = cells or {}, marks or {}
    lines = ["| shift | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for s, r in df.iterrows():
        out = []
        for c in cols:
            text = cells.get(s, {}).get(c) or _fmt(r[c])
            mk = marks.get(c, {})
            if mk.get("best") == s:
                text = f"**{text}**"
            elif s in mk.get("tied", []):
                text += " †"
            out.append(text)
        lines.append(f"| {s} | " + " | ".join(out) + " |")
    return "\n".join(lines)
