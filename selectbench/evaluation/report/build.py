"""The report: tables (md/csv/tex) with intervals, figures (png), findings with three-valued verdicts
and a summary metrics file, from reports/metrics, reports/items and reports/cost only."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from selectbench.core import layout  # noqa: E402
from selectbench.core.classes import load as load_classes  # noqa: E402
from selectbench.core.io import write_json  # noqa: E402
from selectbench.core.params import get, replicates  # noqa: E402
from selectbench.evaluation import accuracy as M  # noqa: E402
from selectbench.evaluation import stats  # noqa: E402
from selectbench.evaluation.report import findings, tables  # noqa: E402
from selectbench.evaluation.report import runs as R

NOISE_VALIDATION = "Validation: the truth-free noise estimate"
VARIANCE = ("Each replicate trains and evaluates a shift with its own seeds: model initialisation, data order, "
            "augmentation and mixup (`train.seed`), the transfer tasks' training (`evaluate.seed`) and the SSL kNN bank draw. "
            "Curation is drawn once per shift, so the intervals do not cover a new curation draw (hkm, rebalancing, "
            "subsampling, generation). Test items are the same for every shift and replicate; the intervals also "
            "cover their sampling.")


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _err(ivs, s, m):
    iv = ivs[s].get(m)
    return (np.nan, 0.0) if iv is None else (iv.mean, iv.half() if iv.complete else 0.0)


def _figures(out: Path, runs: dict, ivs: dict, util, cost, tail: int, classes: list[str], noise_ok: bool) -> None:
    present = [s for s, sh in runs.items() if sh.data is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in present:
        counts = np.sort(np.asarray(runs[s].data["dataset"]["count_per_class"]))[::-1]
        ax.plot(np.arange(1, len(counts) + 1), np.maximum(counts, 0.8), marker="o", label=s)
    ax.set_yscale("log")
    ax.axhline(tail, color="grey", ls="--", lw=1, label=f"long-tail threshold ({tail})")
    ax.set_xlabel("class rank (sorted by count)")
    ax.set_ylabel("training images per class (log; 0 drawn at 0.8)")
    ax.set_title("Class-count distribution per shift")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, out / "class_counts.png")

    # Per-class accuracy (mean over replicates) against per-class training count.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs, ys = [], []
    for s in present:
        sh = runs[s]
        if not sh.trained:
            continue
        c = np.asarray(sh.data["dataset"]["count_per_class"], dtype=float)
        a = np.mean([np.asarray(sh.evals[r]["per_class_accuracy"], dtype=float) for r in sh.trained], axis=0)
        ax.scatter(np.maximum(c, 0.8), a, label=s, s=18)
        xs += list(c)
        ys += list(a)
    rho = M.spearman(np.asarray(xs), np.asarray(ys)) if xs else float("nan")
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class in the shift (log; 0 drawn at 0.8)")
    ax.set_ylabel("test accuracy of the class (mean over replicates)")
    ax.set_title(f"Per-class accuracy vs class count (Spearman {rho:.2f}, all shifts pooled)")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, out / "accuracy_vs_count.png")

    # Every utility metric with its interval: the error bars a reader needs to judge a ranking.
    fig, axes = plt.subplots(1, len(R.UTILITY), figsize=(3.2 * len(R.UTILITY), 4.5), sharey=True)
    names = list(runs)
    for ax, (m, (label, _)) in zip(np.atleast_1d(axes), R.UTILITY.items()):
        mv = [_err(ivs, s, m) for s in names]
        ax.errorbar([v for v, _ in mv], range(len(names)), xerr=[e for _, e in mv], fmt="o", capsize=3)
        ax.set_yticks(range(len(names)), names)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Utility per shift: mean over replicates, 95% interval (replicates + test items)", fontsize=9)
    _save(fig, out / "utility_intervals.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in present:
        c, (v, e) = cost.loc[s, "compute_s"], _err(ivs, s, "top1")
        if np.isnan(v) or np.isnan(c) or runs[s].control:
            continue
        ax.errorbar(c, v, yerr=e, fmt="s" if cost.loc[s, "bin"] == "high" else "o", capsize=3,
                    color="tab:red" if cost.loc[s, "bin"] == "high" else "tab:blue")
        ax.annotate(s, (c, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = cost[cost["pareto"]].sort_values("compute_s")
    if len(front):
        ax.plot(front["compute_s"], front["top1"], "k--", lw=1, label="Pareto frontier (means)")
    ax.plot([], [], "o", color="tab:blue", label="low: no human labour per image")
    ax.plot([], [], "s", color="tab:red", label="high: human labour per image")
    ax.set_xscale("log")
    ax.set_xlabel("compute per shift (s, log): curation + training + share of upstream models; this machine")
    ax.set_ylabel("base top-1 accuracy (95% interval)")
    ax.set_title("Utility against cost per shift")
    ax.legend(fontsize=7)
    _save(fig, out / "utility_vs_cost.png")

    # Data-quantity curves: shifts `<parent>_q<pct>` are seeded fractions of <parent>.
    curves = {}
    for s in present:
        if "subsample" in runs[s].data["dataset"] and "_q" in s:
            curves.setdefault(s.rsplit("_q", 1)[0], []).append(s)
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for parent, kids in curves.items():
            pts = [(runs[k].data["images"], *_err(ivs, k, "top1")) for k in kids + ([parent] if parent in ivs else [])]
            pts = sorted(p_ for p_ in pts if not np.isnan(p_[1]))
            ax.errorbar([x for x, _, _ in pts], [y for _, y, _ in pts], yerr=[e for _, _, e in pts], marker="o",
                        capsize=3, label=parent)
        ax.set_xscale("log")
        ax.set_xlabel("training images (log)")
        ax.set_ylabel("base top-1 accuracy (95% interval)")
        ax.set_title("Data-quantity curve (seeded fractions of a shift)")
        ax.legend()
        _save(fig, out / "data_quantity.png")

    util = util.drop(index=[s for s, sh in runs.items() if sh.control])  # controls rank nothing
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, q in zip(axes, ("inception_score", "cmmd")):
        d = util[[q, "top1"]].dropna()
        r = M.spearman(d[q].to_numpy(), d["top1"].to_numpy()) if len(d) >= 3 else float("nan")
        ax.errorbar(d[q], d["top1"], yerr=[_err(ivs, s, "top1")[1] for s in d.index], fmt="o", capsize=3)
        for s, row in d.iterrows():
            ax.annotate(s, (row[q], row["top1"]), fontsize=7)
        ax.set_xlabel(q.replace("_", " "))
        ax.set_ylabel("base top-1 accuracy")
        ax.set_title(f"Spearman {r:.2f} (of means)")
    _save(fig, out / "quality_vs_utility.png")

    cols = list(R.UTILITY) + (["noise"] if noise_ok else []) + ["inception_score", "cmmd"]
    n = len(cols)
    mat = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            d = util[[cols[i], cols[j]]].dropna() if i != j else util[[cols[i]]].dropna()
            if len(d) >= 3:
                mat[i, j] = 1.0 if i == j else M.spearman(d[cols[i]].to_numpy(), d[cols[j]].to_numpy())
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(mat, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(n), cols, rotation=45, ha="right")
    ax.set_yticks(range(n), cols)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, "" if np.isnan(mat[i, j]) else f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, label="Spearman rank correlation across shifts (of means)")
    ax.set_title("Rank agreement between metrics")
    _save(fig, out / "rank_heatmap.png")

    grids = {s: np.load(layout.samples(s)) for s in runs if layout.samples(s).exists()}
    if grids:
        ncol = max(len(g["images"]) for g in grids.values()) or 1
        fig, axes = plt.subplots(len(grids), ncol, figsize=(1.6 * ncol, 1.9 * len(grids)), squeeze=False)
        for i, (s, g) in enumerate(grids.items()):
            for j in range(ncol):
                ax = axes[i, j]
                ax.axis("off")
                if j < len(g["images"]):
                    ax.imshow(g["images"][j], cmap="gray", vmin=0, vmax=255)
                    cap = str(g["captions"][j])[:18]
                    ax.set_title(f"{classes[int(g['labels'][j])]}" + (f"\n{cap}" if cap else ""), fontsize=6)
            axes[i, 0].text(-0.15, 0.5, s, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=8)
        fig.suptitle("Example training images per shift (title: curated label / web caption)", fontsize=9)
        _save(fig, out / "examples.png")


def summary(runs: dict, ivs: dict) -> dict:
    """shift -> metric -> mean, interval, n, spread between replicates, the half-width the test-set
    sampling alone gives (`item_half`, a proportion's sampling interval) and the per-replicate values."""
    out = {}
    for s, sh in runs.items():
        out[s] = {}
        for m in R.UTILITY:
            iv = ivs[s].get(m)
            if iv is None:
                out[s][m] = None
                continue
            sc = sh.scores(m)
            per = stats.stratified_means(*sc) if sc is not None else []
            out[s][m] = {**{k: v for k, v in iv.record().items() if k in ("mean", "lo", "hi", "n", "sd", "item_half")},
                         "replicates": {r: round(float(v), 4) for r, v in zip(sh.trained, per)}}
    return out


def build_report(p: dict, out: str | Path) -> tuple[list[str], list[dict]]:
    """Writes every report file under `out` (+ reports/summary.json); returns (present shifts, findings)."""
    shifts = list(get(p, "shifts", dict))
    tail = get(p, "report.tail_threshold", int, lo=1)
    near_margin = get(p, "report.near_copy_margin", float, lo=0.0, hi=1.0)
    dec = findings.Decision(get(p, "report.decision.confidence", float, lo=0.5, hi=0.999),
                            get(p, "report.decision.margin", float, lo=0.0),
                            get(p, "report.decision.draws", int, lo=100), get(p, "report.decision.seed", int))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cls = load_classes()
    runs = R.load(shifts, replicates(p))
    ivs = tables.intervals(runs, dec.confidence)
    util = tables.utility_table(runs, ivs)
    data = tables.dataset_table(runs)
    floor = tables.noise_floor(runs, ivs, dec.confidence)
    marks = tables.best_marks(runs, ivs, dec.confidence)
    util.to_csv(out / "utility.csv")
    data.to_csv(out / "datasets.csv")
    floor.to_csv(out / "noise_floor.csv")
    tables.flat_table(runs).to_csv(out / "metrics_all.csv")  # every scalar, every replicate, one table
    ucols = list(R.UTILITY) + ["mCE_vs_in", "spearman_vs_in"]
    cells = {s: {c: tables.cell(ivs[s].get(c)) for c in ucols} for s in runs}
    (out / "utility.tex").write_text(util[[c for c in ucols] + [f"{c}_{k}" for c in ucols for k in ("lo", "hi")]]
                                     .to_latex(float_format="%.3f", na_rep="missing"))
    (out / "datasets.tex").write_text(data.to_latex(float_format="%.3f", na_rep="missing"))
    checks = findings.controls(runs, dec, len(cls.names), R.random_init(replicates(p)))
    # A transfer score ranks shifts only if `in` beats random initialisation on it in this run.
    transfer_ok = any(c["control"] == "transfer" and c["verdict"] == stats.HOLDS for c in checks)
    if not transfer_ok:
        marks["transfer"] = {"best": None, "tied": []}
    found = findings.findings(runs, dec, cls.names, cls.confusable)
    # The truth-free noise estimate enters a ranking only if it passed its validation in this run.
    noise_ok = any(f["claim"].startswith(NOISE_VALIDATION) and f["verdict"] == stats.HOLDS for f in found)
    curves = tables.quantity_curves(runs, ivs, dec.confidence)
    curves.to_csv(out / "data_quantity.csv", index=False)
    qu = findings.quality_vs_utility(runs, dec, list(R.UTILITY))
    pd.DataFrame(qu).to_csv(out / "quality_utility.csv", index=False)
    cost = tables.cost_table(runs, ivs, R.upstream_costs())
    cost.to_csv(out / "cost.csv")
    _figures(out, runs, ivs, util, cost, tail, cls.names, noise_ok)

    tied = [f"{R.UTILITY[m][0]}: " + ", ".join(mk["tied"]) for m, mk in marks.items() if mk["tied"]]
    lines = ["# SELECT benchmark report (generated by `dvc repro`)", "",
             f"Every utility number is the mean over {len(replicates(p))} replicates ± the half-width of its "
             f"{dec.confidence:.0%} interval (t, Welch-Satterthwaite, over replicates and test items; "
             "`selectbench/evaluation/stats.py`).", "", VARIANCE, "",
             "## Controls: can this run see data?", "", *_controls_md(checks, dec), "",
             "## Dataset statistics per shift", "", *_budget_md(runs),
             tables.markdown(data, list(data.columns)), "",
             "## Utility metrics per shift", "",
             "**Bold**: best, by a paired comparison with the runner-up (same seeds, same test items). "
             "†: tied with the highest mean (their paired interval reaches 0); then no shift is marked best.", "",
             tables.markdown(util, ucols, cells, marks), "",
             *(["Tied for best: " + "; ".join(tied) + ".", ""] if tied else []),
             *([] if transfer_ok else [
                 "transfer: **unvalidated**. In this run `in`'s models do not transfer better than the same networks "
                 "from random initialisation (Controls), so the column does not show what a shift's data taught its "
                 "model; no shift is marked best on it.", ""]),
             _transfer_protocol(p), "",
             "mCE_vs_in and spearman_vs_in compare each replicate with `in`'s replicate of the same seed.", "",
             "## Dataset-side metrics (no model: one value per shift)", "",
             "Computed by the judges below, which curation never uses. "
             "noise_exact: the share of wrong labels, known from the simulation. noise: the truth-free estimate "
             + ("(it passed its validation below)." if noise_ok else
                "- **failed its validation below**, so it is kept out of every ranking and figure.")
             + " inception_score is an *analogue*: the judge classifier is the scoring network, not Inception-v3 (the "
             "full profile uses Inception-v3). cmmd: unbiased MMD^2 x 1000 against base train embeddings, RBF bandwidth by the median "
             "heuristic on the base sample (one sigma for all shifts); cmmd_floor: the same statistic between two "
             "disjoint base samples, what one distribution scores against itself.", "",
             tables.markdown(util, ["noise", "noise_exact", "inception_score", "cmmd", "cmmd_floor"]), "",
             "### Which model computed each metric", "", *_judges_md(runs), "",
             "## Image-conditioned shifts: near-copies?", "", *_copies_md(runs, near_margin), "",
             "## Contamination: evaluation images inside a shift?", "", *_audit_md(R._json(layout.AUDIT_SUMMARY)), "",
             "## Cost", "", *_cost_md(cost), "",
             "## Data quantity: what does more of the same data buy? (SELECT's open question 1)", "",
             *_curves_md(curves), "",
             "## Does image quality predict utility? (SELECT's open question 2)", "", *_quality_md(qu, dec, transfer_ok), "",
             "## Noise floor per metric", "",
             "How far `in`'s replicates spread, and how wide a paired comparison with the weakest shift is, against "
             "the range from `in` to the weakest shift. A metric whose range is not well above its half-width cannot "
             "rank shifts.", "",
             _floor_md(floor), "",
             "## Headline findings, checked in this run", "",
             "Each verdict follows a rule fixed before results were seen (`report.decision` in params.yaml, "
             "`selectbench/evaluation/stats.py`).", ""]
    lines += _claims_md(found)
    missing = [s for s, sh in runs.items() if sh.status != "ok"]
    if missing:
        lines += ["", "Missing or untrained: " + ", ".join(f"{s} ({runs[s].status})" for s in missing)]
    lines += ["", "## Figures", ""] + [f"![{n}]({n}.png)" for n in
                                       ("utility_intervals", "class_counts", "accuracy_vs_count", "utility_vs_cost",
                                        "quality_vs_utility", "rank_heatmap", "examples", "data_quantity")
                                       if (out / f"{n}.png").exists()]
    (out / "index.md").write_text("\n".join(lines) + "\n")
    (out / "findings.json").write_text(json.dumps(checks + found, indent=2) + "\n")
    write_json(layout.SUMMARY, summary(runs, ivs))
    return [s for s, sh in runs.items() if sh.data is not None], found


def _claims_md(found: list[dict]) -> list[str]:
    lines = []
    for f in found:
        lines.append(f"- {f['claim']}: **{f['verdict']}** ({f['evidence']})")
        lines.append(f"  - rule: {f['rule']}" + (f"; would be decided by: {f['decide']}" if f["decide"] else ""))
    return lines


def _controls_md(checks: list[dict], dec) -> list[str]:
    """The controls and what their outcome means for every comparison below."""
    if not checks:
        return ["No control shift in this run (a `<shift>_q<pct>` fraction, a `shuffle_labels: true` shift): "
                "nothing shows that the harness can see data."]
    lines = _claims_md(checks)
    pos = [c for c in checks if c["control"] == "positive"]
    neg = [c for c in checks if c["control"] == "negative"]
    if not pos or any(c["verdict"] != stats.HOLDS for c in pos):
        lines += ["", "**This run cannot rank curation strategies**: the positive control did not hold, so the harness "
                      "has not shown that a shift scores higher than a fraction of its own data; a difference "
                      "between strategies below may be the training budget or noise, not the data."]
    if any(c["verdict"] == stats.FAILS for c in neg):
        lines += ["", "**The harness scores above or below chance without label information**: a shift's accuracy "
                      "may come from something other than its labels (a leak between training and test data)."]
    if pos and neg and all(c["verdict"] == stats.HOLDS for c in pos + neg):
        lines += ["", "The positive and negative controls hold: the harness sees more data as better, and sees no signal "
                      "where there is none."]
    return lines


def _budget_md(runs: dict) -> list[str]:
    """Which shifts train on the matched image budget, and which on fewer images (and why)."""
    budgets = {(sh.data or {}).get("dataset", {}).get("image_budget") for sh in runs.values() if sh.data}
    budgets.discard(None)
    if not budgets:
        return ["Shifts are not matched in size (`curation.images: null`): each trains on all it curated.", ""]
    n = max(budgets)
    below = [f"{s} ({sh.data['images']})" for s, sh in runs.items() if sh.data and sh.data["images"] < n]
    text = (f"Every shift trains on a class-stratified seeded draw of at most {n} images (`curation.images`), so "
            "shifts compare at a matched size; `matched_from` in datasets.csv is what the strategy curated.")
    if below:
        text += " Fewer than that: " + ", ".join(below) + " (a data-quantity fraction has fewer by design)."
    return [text, ""]


def near_copies(copy: dict, margin: float) -> bool | None:
    """True when a generated image sits closer to its own conditioning image than to another base
    image of its class by more than `margin` (relative); None when it cannot be told."""
    own, other = copy.get("rms_own"), copy.get("rms_same_class")
    if own is None or other is None or not (np.isfinite(own) and np.isfinite(other)) or other <= 0:
        return None
    return bool(own < (1.0 - margin) * other)


def _copies_md(runs: dict, margin: float) -> list[str]:
    rows = [(s, sh.data["dataset"]["near_copy"]) for s, sh in runs.items()
            if sh.data and "near_copy" in sh.data.get("dataset", {})]
    if not rows:
        return ["No image-conditioned generated shift in this run."]
    out = [f"Median RMS pixel difference (0-255) of a generated image to its own conditioning image and to a random "
           f"other base image of its class. Near-copies: own < (1 - {margin:g}) x same-class "
           "(`report.near_copy_margin`). A near-copy shift measures its conditioning images, not its generator.", "",
           "| shift | RMS to own conditioning image | RMS to a same-class base image | near-copies? |",
           "|---|---|---|---|"]
    for s, c in rows:
        v = near_copies(c, margin)
        verdict = "cannot tell" if v is None else ("**yes**" if v else "no")
        out.append(f"| {s} | {tables._fmt(c.get('rms_own'), 1)} | {tables._fmt(c.get('rms_same_class'), 1)} | {verdict} |")
    return out


def _audit_md(audit: dict | None) -> list[str]:
    """The audit stage's leakage table: per shift, items that near-copy an evaluation image."""
    if not audit:
        return ["No contamination audit in this run (stage `audit`)."]
    sets = list(audit["sets"])
    th = "; ".join(f"{n} ({v['items']} items): cosine > {v['cosine']:.4f}, "
                   + (f"hash <= {v['hamming']} bits" if v["hamming"] >= 0 else "hash off (its own items collide)")
                   for n, v in audit["sets"].items())
    out = [f"Items of each shift that near-copy an image a model is scored on, by identical pixels, a 64-bit "
           f"difference hash or the curation embedder's cosine. Thresholds per evaluation set, from how close its own "
           f"distinct items come to each other (at most {audit['null_rate']:g} of them would flag one of their own "
           f"set): {th}. "
           + ("Flagged items are left out before training (`audit.remove`); the dataset statistics above are "
              "before that removal." if audit["remove"] else
              "**Flagged items were trained on** (`audit.remove: false`)."), "",
           "| shift | items | flagged (removed) | " + " | ".join(sets) + " |", "|---|---|---|" + "---|" * len(sets)]
    for s, v in audit["shifts"].items():
        cells = []
        for n in sets:
            c = v["per_set"].get(n, {})
            det = ", ".join(f"{k} {c[k]}" for k in ("exact", "hash", "cosine") if c.get(k))
            cells.append(f"{c.get('any', 0)}" + (f" ({det})" if det else ""))
        out.append(f"| {s} | {v['items']} | {v['flagged_items']} | " + " | ".join(cells) + " |")
    return out


def _curves_md(curves) -> list[str]:
    if curves.empty:
        return ["No data-quantity shift in this run (`<shift>_q<pct>` with `subsample:`; README, \"Data-quantity "
                "curves\")."]
    out = ["Seeded fractions of a shift (`<shift>_q<pct>`), trained with the same step budget, so more data costs "
           "curation and labour, not training compute. gain: paired top-1 difference to the next smaller point (same "
           "seeds, same test items, 95% interval); per 1k images: that gain per 1,000 added images. Knee: the smallest "
           "point that no larger point of its curve beats by a paired interval above 0 (the largest point when every "
           "step still gains, so the curve may rise beyond it). `data_quantity.csv`, `data_quantity.png`.", "",
           "| shift | images | top-1 [95%] | gain [95%] | gain per 1k images | knee |", "|---|---|---|---|---|---|"]
    for _, r in curves.iterrows():
        gain = "" if np.isnan(r["gain"]) else f"{r['gain']:+.3f} [{r['gain_lo']:+.3f}, {r['gain_hi']:+.3f}]"
        per = "" if np.isnan(r["gain_per_1k"]) else f"{r['gain_per_1k']:+.3f}"
        out.append(f"| {r['shift']} | {r['images']} | {r['top1']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] | {gain} | "
                   f"{per} | {'**knee**' if r['knee'] else ''} |")
    return out


def _quality_md(qu: list[dict], dec, transfer_ok: bool) -> list[str]:
    if not qu:
        return ["No dataset-quality metric in this run."]
    metrics = list(dict.fromkeys(r["utility"] for r in qu))
    out = [f"Spearman of each dataset-quality metric (computed by the judges, no model of the shift) with each "
           f"utility metric over the shifts (controls and data-quantity fractions left out), "
           f"{dec.confidence:.0%} percentile bootstrap over shifts and replicates ({dec.draws} draws; "
           "`quality_utility.csv`). CMMD enters with its sign flipped, so for both rows a positive value means "
           "better quality goes with more utility. A description of this run's shifts, not a claim"
           + ("" if transfer_ok else "; transfer is unvalidated in this run (Controls)") + ".", "",
           "| quality | " + " | ".join(R.UTILITY[m][0] for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for q in dict.fromkeys(r["quality"] for r in qu):
        cells = []
        for m in metrics:
            r = next(x for x in qu if x["quality"] == q and x["utility"] == m)
            if r["spearman"] is None:
                cells.append(f"({r['shifts']} shifts)")
            else:
                span = f" [{r['interval'][0]:+.2f}, {r['interval'][1]:+.2f}]" if r["interval"] else ""
                cells.append(f"{r['spearman']:+.2f}{span}")
        out.append(f"| {'-cmmd' if q == 'cmmd' else q} | " + " | ".join(cells) + " |")
    return out


def _transfer_protocol(p: dict) -> str:
    protocol = get(p, "transfer.protocol", str)
    how = ("a new linear head on the frozen network's pooled features" if protocol == "linear"
           else "the whole network fine-tuned with a new head")
    return (f"transfer: mean top-1 over {len(get(p, 'transfer.tasks', list))} tasks, each {how}, "
            f"{get(p, 'transfer.steps', int)} SGD steps (`transfer.protocol: {protocol}`; chosen by "
            "docs/simulation.md section 16).")


def _judges_md(runs: dict) -> list[str]:
    """Per metric, the model behind it and that model's own quality: a reader can check that no
    encoder that curated a shift scores it."""
    judges = next((sh.data["judges"] for sh in runs.values() if sh.data and "judges" in sh.data), None)
    q = {r: R._json(layout.judge_quality(r)) or {} for r in ("encoder", "classifier")}
    lines = ["| metric | computed by | that model's quality |", "|---|---|---|",
             "| top-1, corruption, natural, transfer | the shift's own model (`train@<shift>-<rep>`) | the metrics themselves |"]
    if judges is None:
        return lines + ["", "(no describe record says which judges it used)"]
    enc, clf = judges["encoder"], judges["classifier"]
    enc_q = q["encoder"].get("knn_top1")
    clf_q = q["classifier"].get("test_top1")
    lines += [f"| SSL kNN, CMMD, label-noise estimate | judge encoder: {enc['model']} ({enc['kind']}; self-supervised, base "
              f"train images, no labels) | test kNN top-1 {tables._fmt(enc_q)} ({q['encoder'].get('bank', '?')} base "
              "images as the bank, k = 20) |",
              f"| inception_score (analogue) | judge classifier: {clf['model']} ({clf['kind']}; supervised on the base "
              f"task) | test top-1 {tables._fmt(clf_q)} |",
              "| noise_exact | the simulation's own truth | exact |",
              "", "The curation embedder (`models/embedder`, which selects `la_img2img`, `la_txt2img`, `hkm` and the "
                  "rebalanced shift and conditions the generator) computes none of these."]
    return lines


def _cost_md(cost) -> list[str]:
    lines = ["Compute: the shift's curation, the mean training wall time of its replicates and an equal share of each "
             "upstream stage it needs (embedder training, embedding, generator training) among the shifts of this run "
             "that need it; seconds on this machine. Labour: the human work each curated image assumes and the human "
             "yes/no judgements it takes per kept image (a range from published labelling procedures, docs/labour.md); "
             "bin high when there is any (SELECT bins cost low/high). Labour is counted, not priced: the "
             "per-judgement times found so far are second-hand (docs/labour.md). Pareto: no other shift has both less compute "
             "and a higher mean top-1 (controls excluded).", "",
             "| shift | compute s | curate s | train s | upstream share s | upstream | labour per image "
             "| judgements per image | bin | Pareto |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s, r in cost.iterrows():
        lines.append(f"| {s} | {tables._fmt(r['compute_s'], 1)} | {tables._fmt(r['curate_s'], 1)} | "
                     f"{tables._fmt(r['train_s'], 1)} | {tables._fmt(r['upstream_share_s'], 1)} | {r['upstream']} | "
                     f"{r['labour_per_image']} | {_range(r['judgements_lo'], r['judgements_hi'])} | {r['bin']} | {'control' if r['control'] else ('yes' if r['pareto'] else '')} |")
    return lines


def _range(lo, hi) -> str:
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def _floor_md(floor) -> str:
    if floor.empty:
        return "(needs `in` and one other trained shift)"
    rows = ["| metric | sd between `in`'s replicates | `in` ± | of which test items alone ± | weakest shift | "
            "range `in` to weakest | paired ± | range / paired ± |", "|---|---|---|---|---|---|---|---|"]
    for m, r in floor.iterrows():
        rows.append(f"| {r['label']} | {tables._fmt(r['in_sd_between_replicates'])} | {tables._fmt(r['in_half_width'])} | "
                    f"{tables._fmt(r['in_test_items_half_width'])} | "
                    f"{r['weakest']} | {tables._fmt(r['range_in_to_weakest'])} | {tables._fmt(r['paired_half_width'])} | "
                    f"{tables._fmt(r['range_over_half_width'], 1)} |")
    return "\n".join(rows)
