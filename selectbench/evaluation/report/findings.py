"""The brief's headline findings, each checked against this run's numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd

from selectbench.evaluation import accuracy as M
from selectbench.evaluation.report.tables import _fmt, _get


def findings(util: pd.DataFrame, data: pd.DataFrame, mets: dict, classes: list[str], fine_grained: set[str]) -> list[dict]:
    """The brief's headline findings, each checked against this run's numbers. `fine_grained`: the
    classes of classes.yaml's confusable groups (the simulation's own, so this is a sanity check)."""
    out = []

    def add(claim, holds, evidence):
        out.append({"claim": claim, "holds": None if holds is None else bool(holds), "evidence": evidence})

    # Data-quantity variants (`<shift>_q<pct>`) are the same strategy on less data, not rivals.
    t = util["top1"][[s for s in util.index if "_q" not in s]]
    if "in" in t and t.notna().sum() > 1 and not np.isnan(t["in"]):
        others = t.drop("in").dropna()
        add("Expert curation (in) stays best on base accuracy", bool((t["in"] >= others).all()),
            f"in {t['in']:.3f} vs best other {others.max():.3f} ({others.idxmax()})")
    else:
        add("Expert curation (in) stays best on base accuracy", None, "in or other shifts missing")
    la = t.filter(like="la_").dropna()
    sd = t.filter(like="sd_").dropna()
    add("Embedding/text search from a web pool beats synthetic generation",
        None if la.empty or sd.empty else la.max() > sd.max(),
        "missing" if la.empty or sd.empty else f"best LA {la.max():.3f} vs best SD {sd.max():.3f}")
    pairs = [("la_img2img", "la_txt2img"), ("sd_img2img", "sd_txt2img")]
    ev, ok = [], []
    for a, b in pairs:
        if a in t and b in t and not (np.isnan(t[a]) or np.isnan(t[b])):
            ok.append(t[a] > t[b])
            ev.append(f"{a} {t[a]:.3f} vs {b} {t[b]:.3f}")
    add("img2img beats txt2img", all(ok) if ok else None, "; ".join(ev) or "missing")
    both = pd.concat([util["top1"], data["gini"]], axis=1).dropna()
    rho = M.spearman(both["gini"].to_numpy(), both["top1"].to_numpy()) if len(both) >= 3 else float("nan")
    add("Class imbalance explains most of the loss (more skew, lower accuracy)",
        None if np.isnan(rho) else rho <= -0.5, f"Spearman(gini, top1) = {_fmt(rho)} over {len(both)} shifts")
    if "la_txt2img" in t and "la_txt2img_balanced" in t:
        a, b = t.get("la_txt2img"), t.get("la_txt2img_balanced")
        add("Rebalancing a skewed shift (hierarchical k-means) raises its accuracy",
            None if np.isnan(a) or np.isnan(b) else b > a, f"la_txt2img {_fmt(a)} -> balanced {_fmt(b)}")
    for q in ("inception_score", "cmmd"):
        qq = pd.concat([util[q], util["top1"]], axis=1).dropna()
        r = M.spearman(qq[q].to_numpy(), qq["top1"].to_numpy()) if len(qq) >= 3 else float("nan")
        sign = -1 if q == "cmmd" else 1  # lower CMMD is "better quality"
        add(f"Image quality ({q}) does not predict utility", None if np.isnan(r) else sign * r < 0.5,
            f"Spearman({q}, top1) = {_fmt(r)}")
    fine = [i for i, c in enumerate(classes) if c in fine_grained]
    rest = [i for i in range(len(classes)) if i not in fine]
    f_n, r_n = [], []
    for m in mets.values():
        pc = _get(m, "label_noise", "per_class_exact", default=None)
        if pc:
            arr = np.array([np.nan if v is None else v for v in pc], dtype=float)
            f_n.append(np.nanmean(arr[fine]))
            r_n.append(np.nanmean(arr[rest]))
    if f_n:
        fm, rm = float(np.nanmean(f_n)), float(np.nanmean(r_n))
        add("Label noise concentrates in fine-grained classes", fm > rm,
            f"mean exact noise: fine-grained {fm:.3f} vs other classes {rm:.3f}")
    # Not a finding of the brief: validates the truth-free noise estimator against the exact rate
    # the simulation knows, so the estimate can be trusted where no truth exists (full profile).
    nz = util[["noise", "noise_exact"]].dropna()
    if len(nz) >= 3:
        r = M.spearman(nz["noise"].to_numpy(), nz["noise_exact"].to_numpy())
        mae = float(np.abs(nz["noise"] - nz["noise_exact"]).mean())
        add("Validation: the truth-free noise estimate ranks shifts like the exact noise", r >= 0.7,
            f"Spearman(estimated, exact) = {_fmt(r)}, mean |estimated - exact| = {_fmt(mae)} over {len(nz)} shifts")
    else:
        add("Validation: the truth-free noise estimate ranks shifts like the exact noise", None,
            f"exact noise known for {len(nz)} shifts (need 3)")
    return out
