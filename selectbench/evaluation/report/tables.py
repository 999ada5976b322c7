"""Tables of the report (utility, dataset statistics, every metric) from the per-shift metrics files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from selectbench.evaluation import accuracy as M

UTILITY = [("top1", "base top-1", True), ("corruption", "synthetic shift", True), ("natural", "natural shift", True),
           ("transfer", "transfer mean", True), ("ssl", "SSL kNN (10-shot, k=20)", True),
           ("noise", "label noise (est.)", False)]


def load(metrics_dir: Path, cost_dir: Path, shifts: list[str]) -> tuple[dict, dict]:
    mets, costs = {}, {}
    for s in shifts:
        f = metrics_dir / f"{s}.json"
        mets[s] = json.loads(f.read_text()) if f.exists() else None
        c = {}
        for stage in ("curate", "train", "evaluate"):
            g = cost_dir / f"{stage}_{s}.json"
            if g.exists():
                c[stage] = json.loads(g.read_text())
        costs[s] = c
    return mets, costs


def _get(d, *path, default=float("nan")):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return default if d is None else d


def utility_table(mets: dict, costs: dict) -> pd.DataFrame:
    rows = []
    for s, m in mets.items():
        ok = m is not None and m.get("status") == "ok"
        cur = costs[s].get("curate", {})
        rows.append({
            "shift": s,
            "status": "missing" if m is None else m.get("status", "?"),
            "top1": _get(m, "top1") if ok else np.nan,
            "corruption": _get(m, "corruption", "mean_top1") if ok else np.nan,
            "natural": _get(m, "natural", "top1") if ok else np.nan,
            "transfer": _get(m, "transfer", "mean") if ok else np.nan,
            "transfer_ci": _get(m, "transfer", "ci95", default=None) if ok else None,
            "ssl": _get(m, "ssl_knn", "10shot_k20"),
            "noise": _get(m, "label_noise", "estimated"),
            "noise_exact": _get(m, "label_noise", "exact"),
            "inception_score": _get(m, "quality", "inception_score"),
            "cmmd": _get(m, "quality", "cmmd"),
            "clip_score": _get(m, "quality", "clip_score"),
            "curate_s": cur.get("wall_s", np.nan),
        })
    df = pd.DataFrame(rows).set_index("shift")
    if "in" in mets and mets["in"] is not None and mets["in"].get("status") == "ok":
        base_err = np.asarray(mets["in"]["corruption"]["error_table"], dtype=float)
        base_pc = np.asarray(mets["in"]["per_class_accuracy"], dtype=float)
        # A corruption `in` never errs on has no CE (0/0 or x/0): mCE is over the others, and the
        # count of corruptions it covers is reported beside it.
        defined = base_err.sum(axis=1) > 0
        mce, rho = {}, {}
        for s, m in mets.items():
            if m is not None and m.get("status") == "ok":
                table = np.asarray(m["corruption"]["error_table"], dtype=float)
                mce[s] = M.corruption_error(table[defined], base_err[defined]) if defined.any() else np.nan
                rho[s] = M.spearman(np.asarray(m["per_class_accuracy"], dtype=float), base_pc)
        df["mCE_vs_in"] = pd.Series(mce)
        df["mCE_corruptions"] = int(defined.sum())
        df["spearman_vs_in"] = pd.Series(rho)
    for col, _, higher in UTILITY:
        df[f"rank_{col}"] = df[col].rank(ascending=not higher, method="min")
    rank_cols = [f"rank_{c}" for c, _, _ in UTILITY]
    df["rank_overall"] = df[rank_cols].mean(axis=1).rank(method="min").astype("Int64")
    return df


def dataset_table(mets: dict, costs: dict) -> pd.DataFrame:
    rows = []
    for s, m in mets.items():
        d = (m or {}).get("dataset", {})
        rows.append({"shift": s, "images": d.get("images", np.nan), "coverage": d.get("coverage", np.nan),
                     "classes_below_tail": _get(d, "long_tail", "classes_below"),
                     "tail_image_share": _get(d, "long_tail", "share_of_images_in_tail_classes"),
                     "min": d.get("min", np.nan), "median": d.get("median", np.nan), "max": d.get("max", np.nan),
                     "gini": d.get("gini", np.nan), "label_precision": d.get("label_precision", np.nan),
                     "curate_wall_s": costs[s].get("curate", {}).get("wall_s", np.nan),
                     "curate_cpu_s": costs[s].get("curate", {}).get("cpu_s", np.nan),
                     "train_wall_s": costs[s].get("train", {}).get("wall_s", np.nan)})
    df = pd.DataFrame(rows).set_index("shift")
    for c in ("images", "coverage", "classes_below_tail", "min", "max"):
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    return df


def flat_table(mets: dict, costs: dict, util: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every scalar metric of every shift in one row per shift: the metrics JSON flattened to
    dotted columns (per-class lists as <name>.<i>, matrices left to the JSON), the stage costs as
    cost.<stage>.<field>, and the cross-shift columns of the utility table. A shift without
    metrics is a row with status 'missing', never dropped."""
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
    for s, m in mets.items():
        row = {"shift": s, "status": "missing"}
        walk("", m or {}, row)
        walk("cost", costs.get(s, {}), row)
        rows.append(row)
    df = pd.DataFrame(rows).set_index("shift")
    if util is not None:
        for c in ("mCE_vs_in", "spearman_vs_in", "rank_overall"):
            if c in util.columns:
                df[c] = util[c]
    return df


def _fmt(v, digits=3):
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(df: pd.DataFrame, cols: list[str], best: dict[str, bool] | None = None) -> str:
    best = best or {}
    lines = ["| shift | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    marks = {}
    for c, higher in best.items():
        col = pd.to_numeric(df[c], errors="coerce")
        if col.notna().any():
            marks[c] = col.idxmax() if higher else col.idxmin()
    for s, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cell = _fmt(v) if not isinstance(v, (list, tuple)) else "[" + ", ".join(_fmt(x) for x in v) + "]"
            cells.append(f"**{cell}**" if marks.get(c) == s else cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
