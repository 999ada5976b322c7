"""The report: tables (md/csv/tex), figures (png), checked findings and a summary metrics file,
from reports/metrics and reports/cost only."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from selectbench.core import layout
from selectbench.core.classes import load as load_classes  # noqa: E402
from selectbench.core.io import write_json  # noqa: E402
from selectbench.core.params import get  # noqa: E402
from selectbench.evaluation import accuracy as M  # noqa: E402
from selectbench.evaluation.report import findings, tables  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_report(p: dict, out: str | Path) -> tuple[list[str], list[dict]]:
    """Writes every report file under `out` (+ reports/summary.json); returns (present shifts, findings)."""
    shifts = list(get(p, "shifts", dict))
    tail = get(p, "report.tail_threshold", int, lo=1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cls = load_classes()
    classes = cls.names
    mets, costs = tables.load(layout.METRICS, layout.COSTS, shifts)
    util = tables.utility_table(mets, costs)
    data = tables.dataset_table(mets, costs)
    util.drop(columns=["transfer_ci"]).to_csv(out / "utility.csv")
    data.to_csv(out / "datasets.csv")
    tables.flat_table(mets, costs, util).to_csv(out / "metrics_all.csv")  # every metric, every shift, one table
    (out / "utility.tex").write_text(util.drop(columns=["transfer_ci"]).to_latex(float_format="%.3f", na_rep="missing"))
    (out / "datasets.tex").write_text(data.to_latex(float_format="%.3f", na_rep="missing"))
    present = [s for s in shifts if mets[s] is not None]

    # Figure: class-count distribution per shift.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in present:
        counts = np.sort(np.asarray(mets[s]["dataset"]["count_per_class"]))[::-1]
        ax.plot(np.arange(1, len(counts) + 1), np.maximum(counts, 0.8), marker="o", label=s)
    ax.set_yscale("log")
    ax.axhline(tail, color="grey", ls="--", lw=1, label=f"long-tail threshold ({tail})")
    ax.set_xlabel("class rank (sorted by count)")
    ax.set_ylabel("training images per class (log; 0 drawn at 0.8)")
    ax.set_title("Class-count distribution per shift")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, out / "class_counts.png")

    # Figure: per-class accuracy against per-class training count (the imbalance finding).
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs, ys = [], []
    for s in present:
        m = mets[s]
        if m.get("status") != "ok":
            continue
        c = np.asarray(m["dataset"]["count_per_class"], dtype=float)
        a = np.asarray(m["per_class_accuracy"], dtype=float)
        ax.scatter(np.maximum(c, 0.8), a, label=s, s=18)
        xs += list(c)
        ys += list(a)
    rho = M.spearman(np.asarray(xs), np.asarray(ys)) if xs else float("nan")
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class in the shift (log; 0 drawn at 0.8)")
    ax.set_ylabel("test accuracy of the class")
    ax.set_title(f"Per-class accuracy vs class count (Spearman {rho:.2f}, all shifts pooled)")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, out / "accuracy_vs_count.png")

    # Figure: utility against cost.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in present:
        cost = util.loc[s, "curate_s"] + data.loc[s, "train_wall_s"]
        if not np.isnan(util.loc[s, "top1"]) and not np.isnan(cost):
            ax.scatter(cost, util.loc[s, "top1"], s=30)
            ax.annotate(s, (cost, util.loc[s, "top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("curation + training wall time (s, log; this machine)")
    ax.set_ylabel("base top-1 accuracy")
    ax.set_title("Utility against cost per shift")
    _save(fig, out / "utility_vs_cost.png")

    # Figure: data-quantity curves: shifts `<parent>_q<pct>` are seeded fractions of <parent>.
    curves = {}
    for s in present:
        d = mets[s]["dataset"]
        if "subsample" in d and "_q" in s:
            curves.setdefault(s.rsplit("_q", 1)[0], []).append(s)
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for parent, kids in curves.items():
            pts = [(mets[k]["images"], util.loc[k, "top1"]) for k in kids]
            if parent in util.index and mets.get(parent):
                pts.append((mets[parent]["images"], util.loc[parent, "top1"]))
            pts = sorted(p_ for p_ in pts if not np.isnan(p_[1]))
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=parent)
        ax.set_xscale("log")
        ax.set_xlabel("training images (log)")
        ax.set_ylabel("base top-1 accuracy")
        ax.set_title("Data-quantity curve (seeded fractions of a shift)")
        ax.legend()
        _save(fig, out / "data_quantity.png")

    # Figure: image quality against utility.
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, q in zip(axes, ("inception_score", "cmmd", "clip_score")):
        d = util[[q, "top1"]].dropna()
        r = M.spearman(d[q].to_numpy(), d["top1"].to_numpy()) if len(d) >= 3 else float("nan")
        ax.scatter(d[q], d["top1"])
        for s, row in d.iterrows():
            ax.annotate(s, (row[q], row["top1"]), fontsize=7)
        ax.set_xlabel(q.replace("_", " "))
        ax.set_ylabel("base top-1 accuracy")
        ax.set_title(f"Spearman {r:.2f}")
    _save(fig, out / "quality_vs_utility.png")

    # Figure: rank correlation between metrics.
    cols = ["top1", "corruption", "natural", "transfer", "ssl", "noise", "inception_score", "cmmd", "clip_score"]
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
    fig.colorbar(im, label="Spearman rank correlation across shifts")
    ax.set_title("Rank agreement between metrics")
    _save(fig, out / "rank_heatmap.png")

    # Figure: example images per shift, titled with the curated label (and caption, if any).
    grids = {s: np.load(layout.samples(s)) for s in shifts if layout.samples(s).exists()}
    if grids:
        cols = max(len(g["images"]) for g in grids.values()) or 1
        fig, axes = plt.subplots(len(grids), cols, figsize=(1.6 * cols, 1.9 * len(grids)), squeeze=False)
        for i, (s, g) in enumerate(grids.items()):
            for j in range(cols):
                ax = axes[i, j]
                ax.axis("off")
                if j < len(g["images"]):
                    ax.imshow(g["images"][j], cmap="gray", vmin=0, vmax=255)
                    cap = str(g["captions"][j])[:18]
                    ax.set_title(f"{classes[int(g['labels'][j])]}" + (f"\n{cap}" if cap else ""), fontsize=6)
            axes[i, 0].text(-0.15, 0.5, s, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=8)
        fig.suptitle("Example training images per shift (title: curated label / web caption)", fontsize=9)
        _save(fig, out / "examples.png")

    found = findings.findings(util, data, mets, classes, cls.confusable)
    best = {c: h for c, _, h in tables.UTILITY}
    ucols = [c for c, _, _ in tables.UTILITY] + ["mCE_vs_in", "spearman_vs_in", "rank_overall", "status"]
    ucols = [c for c in ucols if c in util.columns]
    lines = ["# SELECT benchmark report (generated by `dvc repro`)", "",
             "## Dataset statistics per shift", "", tables.markdown(data, list(data.columns)), "",
             "## Utility metrics per shift (best per column in bold)", "",
             tables.markdown(util, ucols, best), "",
             "Transfer 95% CIs: " + "; ".join(f"{s}: {tables._fmt(v) if v is None else '[' + ', '.join(tables._fmt(x) for x in v) + ']'}"
                                            for s, v in util["transfer_ci"].items()), "",
             *([f"mCE_vs_in covers the {int(util['mCE_corruptions'].iloc[0])} corruptions on which `in` errs at all "
                "(CE is undefined where its error is 0).", ""] if "mCE_corruptions" in util else []),
             "## Headline findings, checked in this run", ""]
    for f in found:
        verdict = {True: "holds", False: "does not hold", None: "cannot be checked"}[f["holds"]]
        lines.append(f"- {f['claim']}: **{verdict}** ({f['evidence']})")
    missing = [s for s in shifts if mets[s] is None or mets[s].get("status") != "ok"]
    if missing:
        lines += ["", "Missing or untrained shifts: " + ", ".join(
            f"{s} ({'no metrics' if mets[s] is None else mets[s].get('status')})" for s in missing)]
    lines += ["", "## Figures", ""] + [f"![{n}]({n}.png)" for n in
                                       ("class_counts", "accuracy_vs_count", "utility_vs_cost", "quality_vs_utility",
                                        "rank_heatmap", "examples", "data_quantity") if (out / f"{n}.png").exists()]
    (out / "index.md").write_text("\n".join(lines) + "\n")
    (out / "findings.json").write_text(json.dumps(found, indent=2) + "\n")
    summary = {s: {k: (None if np.isnan(v) else round(float(v), 4)) for k, v in util.loc[s, ["top1", "corruption",
               "natural", "transfer", "ssl"]].items()} for s in shifts}
    write_json(layout.SUMMARY, summary)
    return present, found
