"""The brief's headline findings, each a claim with a decision rule fixed before results are seen
(selectbench.evaluation.stats.verdict, report.decision in params.yaml): *holds*, *does not hold*
or *inconclusive*, from a paired interval over replicates and test items, or a bootstrap interval
over shifts and replicates for rank statements."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selectbench.evaluation import stats
from selectbench.evaluation.report.runs import Shift
from selectbench.evaluation.report.tables import _get, paired


@dataclass(frozen=True)
class Decision:
    confidence: float   # of every interval
    margin: float       # smallest accuracy difference of interest (absolute)
    draws: int          # bootstrap resamples for rank statements
    seed: int


DIFF_RULE = ("paired difference over the same seeds and test items, {c:.0%} interval (replicates + test items, "
             "Welch-Satterthwaite t): holds if it lies above 0, does not hold if it lies below {m:g}, else inconclusive")
RANK_RULE = ("Spearman over shifts, {c:.0%} percentile bootstrap over shifts and replicates ({d} draws): holds if the "
             "interval lies {side} {t:g}, does not hold if it lies on the other side, else inconclusive")


def _record(claim, verdict, decide, effect, iv, rule, evidence):
    return {"claim": claim, "verdict": verdict, "effect": None if iv is None else round(float(effect), 4),
            "interval": None if iv is None or not iv.complete else [round(iv.lo, 4), round(iv.hi, 4)],
            "replicates": None if iv is None else iv.n, "rule": rule, "decide": decide, "evidence": evidence}


def _diff(runs, a, b, metric, dec):
    """(interval of metric(a) - metric(b), "a - b: +x [lo, hi]") or (None, why)."""
    if a not in runs or b not in runs:
        return None, f"{a if a not in runs else b} not in this run"
    iv = paired(runs[a], runs[b], metric, dec.confidence)
    if iv is None:
        return None, f"{a} or {b} has no trained replicate"
    span = f"[{iv.lo:+.3f}, {iv.hi:+.3f}]" if iv.complete else f"({iv.note})"
    return iv, f"{a} - {b}: {iv.mean:+.3f} {span}"


def _diff_claim(claim, parts, dec):
    """A claim that every listed (a, b) difference is > 0; parts: [(interval or None, evidence)]."""
    rule = DIFF_RULE.format(c=dec.confidence, m=dec.margin)
    if not parts or any(iv is None for iv, _ in parts):
        return _record(claim, stats.OPEN, "the missing shifts", None, None, rule,
                       "; ".join(e for _, e in parts) or "missing")
    vs = [stats.verdict(iv, dec.margin) for iv, _ in parts]
    v = stats.combine([x for x, _ in vs])
    decide = "; ".join(sorted({d for x, d in vs if x == stats.OPEN and d}))
    # The part that decides the verdict: the lowest interval (a claim holds only if even it is above 0).
    worst = min(parts, key=lambda p: p[0].lo if p[0].complete else -np.inf)[0]
    return _record(claim, v, decide, worst.mean, worst, rule, "; ".join(e for _, e in parts))


def _rank_claim(claim, x, y, threshold, below, dec, replicated=True):
    rule = RANK_RULE.format(c=dec.confidence, d=dec.draws, side="below" if below else "above", t=threshold)
    if len(y) < 3:
        return _record(claim, stats.OPEN, "at least 3 shifts", None, None, rule, f"{len(y)} shifts")
    iv = stats.bootstrap_rank(np.asarray(x), np.asarray(y), dec.draws, dec.seed, dec.confidence, replicated)
    v, decide = stats.verdict(iv, 0.0, threshold, greater=not below)
    span = f"[{iv.lo:.3f}, {iv.hi:.3f}]" if iv.complete else f"({iv.note})"
    return _record(claim, v, decide, iv.mean, iv, rule, f"Spearman = {iv.mean:.3f} {span} over {len(y)} shifts")


def _top1_matrix(runs: dict[str, Shift], shifts: list[str]) -> tuple[list[str], np.ndarray]:
    """Shifts with every replicate trained, and their top-1 per replicate [S, R]."""
    reps = sorted(set.intersection(*[set(runs[s].trained) for s in shifts])) if shifts else []
    keep = [s for s in shifts if reps]
    y = np.array([[runs[s].evals[r]["top1"] for r in reps] for s in keep]).reshape(len(keep), len(reps))
    return keep, y


def _utility_matrix(runs: dict[str, Shift], shifts: list[str], metric: str) -> tuple[list[str], np.ndarray]:
    """Shifts with item scores of `metric` on every common replicate, and the metric per replicate [S, R]."""
    reps = sorted(set.intersection(*[set(runs[s].trained) for s in shifts])) if shifts else []
    keep, rows = [], []
    for s in shifts:
        sc = runs[s].scores(metric, reps) if reps else None
        if sc is not None:
            keep.append(s)
            rows.append(stats.stratified_means(*sc))
    return keep, np.array(rows).reshape(len(keep), len(reps))


QUALITY = {"inception_score": 1, "cmmd": -1}  # sign: higher is better quality (lower CMMD is closer to base)


def quality_vs_utility(runs: dict[str, Shift], dec: Decision, metrics: list[str]) -> list[dict]:
    """SELECT's open question 2: Spearman of each dataset-quality metric with each utility metric
    over the shifts (controls and data-quantity fractions left out), with the bootstrap interval
    over shifts and replicates. A description, not a claim: no verdict."""
    out = []
    shifts = [s for s, sh in runs.items() if sh.trained and sh.data and not sh.control and "_q" not in s]
    for q, sign in QUALITY.items():
        for m in metrics:
            keep, y = _utility_matrix(runs, shifts, m)
            x = np.array([sign * _get(runs[s].data, "quality", q) for s in keep], dtype=float)
            ok = np.isfinite(x)
            rec = {"quality": q, "utility": m, "shifts": int(ok.sum()), "spearman": None, "interval": None}
            if ok.sum() >= 3:
                iv = stats.bootstrap_rank(x[ok], y[ok], dec.draws, dec.seed, dec.confidence)
                rec["spearman"] = round(float(iv.mean), 4)
                rec["interval"] = [round(iv.lo, 4), round(iv.hi, 4)] if iv.complete else None
            out.append(rec)
    return out


EQUIV_RULE = ("mean probability the model gives an item's true class (chance = 1/classes; docs/simulation.md "
              "section 13), {c:.0%} interval (replicates + test items): holds if it lies inside chance +- {m:g}, "
              "does not hold if it lies wholly outside, else inconclusive; top-1 is shown, not decisive")


TRANSFER_VALIDITY = "Transfer validity"


def controls(runs: dict[str, Shift], dec: Decision, num_classes: int, baseline: Shift | None = None) -> list[dict]:
    """The checks that the harness can see data at all, each a claim that must hold:
    positive - a shift beats its own data-quantity fraction (`<shift>_q<pct>`) on base top-1, paired;
    negative - a shift trained on shuffled labels scores at chance, within the margin;
    transfer - `in`'s models transfer better than the same networks from random initialisation
    (`baseline`), paired: otherwise the transfer metric does not see the pretraining data."""
    out = []
    if baseline is not None and "in" in runs:
        rec = _diff_claim(f"{TRANSFER_VALIDITY}: in's models transfer better than the same networks from random "
                          "initialisation (transfer mean)", [_diff({**runs, "random init": baseline}, "in",
                                                                   "random init", "transfer", dec)], dec)
        out.append({**rec, "control": "transfer"})
    for s in runs:
        parent = s.rsplit("_q", 1)[0] if "_q" in s else None
        if parent in runs and not runs[parent].control:
            rec = _diff_claim(f"Positive control: {parent} beats its data-quantity fraction {s} on base accuracy",
                              [_diff(runs, parent, s, "top1", dec)], dec)
            out.append({**rec, "control": "positive"})
    chance = 1.0 / num_classes
    for s, sh in runs.items():
        if not sh.control:
            continue
        claim = (f"Negative control: {s} (shuffled labels) is at chance ({chance:.3f}) on the base task "
                 "(mean true-class probability)")
        rule = EQUIV_RULE.format(c=dec.confidence, m=dec.margin)
        sc, top1 = sh.scores("p_true"), sh.scores("top1")
        if sc is None:
            why = f"{s} not trained" if top1 is None else f"{s}: no true-class probabilities (evaluate predates them)"
            out.append({**_record(claim, stats.OPEN, "a trained replicate", None, None, rule, why),
                        "control": "negative"})
            continue

        def span(iv):
            return f"[{iv.lo:.3f}, {iv.hi:.3f}]" if iv.complete else f"({iv.note})"

        iv = stats.interval(sc[0], sc[1], dec.confidence)
        v, decide = stats.equivalent(iv, chance, dec.margin)
        t1 = stats.interval(top1[0], top1[1], dec.confidence)
        out.append({**_record(claim, v, decide, iv.mean, iv, rule,
                              f"p(true class) {iv.mean:.3f} {span(iv)}; top-1 {t1.mean:.3f} {span(t1)}"),
                    "control": "negative"})
    return out


def findings(runs: dict[str, Shift], dec: Decision, classes: list[str], fine_grained: set[str]) -> list[dict]:
    """`fine_grained`: the classes of classes.yaml's confusable groups (the simulation's own).
    Negative controls take no part: they are checked by `controls`."""
    out = []
    runs = {s: sh for s, sh in runs.items() if not sh.control}
    trained = [s for s, sh in runs.items() if sh.trained]
    # Data-quantity variants (`<shift>_q<pct>`) are the same strategy on less data, not rivals.
    rivals = [s for s in trained if "_q" not in s]
    others = [s for s in rivals if s != "in"]
    out.append(_diff_claim("Expert curation (in) stays best on base accuracy",
                           [_diff(runs, "in", s, "top1", dec) for s in others] if "in" in rivals and others else [],
                           dec))
    la = [s for s in rivals if s.startswith("la_")]
    sd = [s for s in rivals if s.startswith("sd_")]

    def best(group):
        return max(group, key=lambda s: np.mean([runs[s].evals[r]["top1"] for r in runs[s].trained]))

    out.append(_diff_claim("Embedding/text search from a web pool beats synthetic generation",
                           [_diff(runs, best(la), best(sd), "top1", dec)] if la and sd else [], dec))
    out.append(_diff_claim("img2img beats txt2img",
                           [_diff(runs, a, b, "top1", dec) for a, b in (("la_img2img", "la_txt2img"),
                                                                        ("sd_img2img", "sd_txt2img"))], dec))
    keep, y = _top1_matrix(runs, [s for s in trained if runs[s].data])
    gini = [_get(runs[s].data, "dataset", "gini") for s in keep]
    out.append(_rank_claim("Class imbalance explains most of the loss (Spearman(gini, top-1) below -0.5)",
                           gini, y, -0.5, True, dec))
    out.append(_diff_claim("Rebalancing a skewed shift (hierarchical k-means) raises its accuracy",
                           [_diff(runs, "la_txt2img_balanced", "la_txt2img", "top1", dec)], dec))
    for q in ("inception_score", "cmmd"):
        sign = -1 if q == "cmmd" else 1  # lower CMMD is "better quality"
        xs = [sign * _get(runs[s].data, "quality", q) for s in keep]
        ok = [i for i, v in enumerate(xs) if np.isfinite(v)]
        out.append(_rank_claim(f"Image quality ({q}) does not predict utility (Spearman with top-1 below 0.5)",
                               [xs[i] for i in ok], y[ok] if len(ok) else y[:0], 0.5, True, dec))
    # The two below involve no trained model: their intervals are over shifts only.
    fine = [i for i, c in enumerate(classes) if c in fine_grained]
    rest = [i for i in range(len(classes)) if i not in fine]
    diffs = []
    for sh in runs.values():
        pc = _get(sh.data, "label_noise", "per_class_exact", default=None)
        if pc and fine and rest:
            arr = np.array([np.nan if v is None else v for v in pc], dtype=float)
            if np.isfinite(arr[fine]).any() and np.isfinite(arr[rest]).any():
                diffs.append(np.nanmean(arr[fine]) - np.nanmean(arr[rest]))
    claim = "Sanity check (a simulation input, not a finding): label noise concentrates in fine-grained classes"
    rule = (f"mean over shifts of (fine-grained - other classes' exact noise), {dec.confidence:.0%} t-interval over "
            f"shifts: holds if above 0, does not hold if below {dec.margin:g}")
    if len(diffs) >= 2:
        iv = stats.interval(np.asarray(diffs)[:, None], None, dec.confidence, items=False)
        v, decide = stats.verdict(iv, dec.margin)
        out.append(_record(claim, v, decide and "more shifts", iv.mean, iv, rule,
                           f"fine-grained - other: {iv.mean:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}] over {len(diffs)} shifts"))
    else:
        out.append(_record(claim, stats.OPEN, "exact noise of at least 2 shifts", None, None, rule,
                           f"exact noise known for {len(diffs)} shifts"))
    nz = [(s, _get(runs[s].data, "label_noise", "estimated"), _get(runs[s].data, "label_noise", "exact"))
          for s in runs if runs[s].data]
    nz = [(s, e, x) for s, e, x in nz if np.isfinite(e) and np.isfinite(x)]
    out.append(_rank_claim("Validation: the truth-free noise estimate ranks shifts like the exact noise "
                           "(Spearman above 0.7)", [e for _, e, _ in nz], np.array([[x] for _, _, x in nz]).reshape(-1, 1),
                           0.7, False, dec, replicated=False))
    return out
