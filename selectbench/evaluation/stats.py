"""Intervals for metrics measured on replicates x test items, paired comparisons, and the
three-valued verdicts of the report. Decision rules live here and in params (`report.decision`),
fixed before any result is seen.

A metric of one replicate is the mean over strata of the mean item score in each stratum (one
stratum: plain accuracy; corruption x severity cells; transfer tasks). Its estimate is the mean
over replicates, with two sources of variance:
- replicates (training seed, data order, augmentation, fine-tuning, SSL bank draw): var(values)/R;
- the test items, the same in every replicate and for every shift: sum_s var_s(item means) /
  (n_s S^2), the sampling variance of a stratified mean.
The interval is mean +- t(df) * sqrt(both), df by Welch-Satterthwaite. A paired comparison is the
same computation on the item-by-item, replicate-by-replicate difference of two shifts' scores.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float         # NaN only when `complete` is False and no component could be estimated
    hi: float
    n: int            # replicates
    sd: float         # spread between replicates (NaN for n = 1)
    se: float
    df: float
    complete: bool    # False: the replicate variance is unknown (n = 1), the interval covers items only
    note: str = ""
    item_half: float = math.nan  # half-width from sampling the test items alone (same confidence)

    def record(self, digits: int = 4) -> dict:
        def r(v):
            return None if v is None or not math.isfinite(v) else round(float(v), digits)
        d = {k: (r(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        d["df"] = None if not math.isfinite(self.df) else round(self.df, 1)
        return d

    def half(self) -> float:
        return (self.hi - self.lo) / 2 if self.complete else float("nan")


def stratified_means(scores: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray:
    """[R] metric values from [R, N] item scores: the mean over strata of each stratum's mean."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be [replicates, items] with at least one item, got shape {scores.shape}")
    if strata is None:
        return scores.mean(1)
    ids, inv = np.unique(np.asarray(strata), return_inverse=True)
    sums = np.zeros((scores.shape[0], len(ids)))
    np.add.at(sums.T, inv, scores.T)
    return (sums / np.bincount(inv)).mean(1)


def _item_variance(scores: np.ndarray, strata: np.ndarray | None) -> tuple[float, float]:
    """(variance of the stratified mean from sampling the items, its degrees of freedom)."""
    e = np.asarray(scores, dtype=np.float64).mean(0)  # item effects, averaged over replicates
    strata = np.zeros(len(e), dtype=np.int64) if strata is None else np.asarray(strata)
    ids = np.unique(strata)
    var = 0.0
    for s in ids:
        x = e[strata == s]
        if len(x) > 1:
            var += x.var(ddof=1) / len(x)
    return var / len(ids) ** 2, float(max(len(e) - len(ids), 1))


def interval(scores: np.ndarray, strata: np.ndarray | None = None, confidence: float = 0.95,
             items: bool = True) -> Interval:
    """Interval of a metric from its [R, N] item scores. items=False: the columns are not a sample
    of test items (e.g. one value per replicate), so only the replicate variance counts."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    vals = stratified_means(scores, strata)
    n, mean = len(vals), float(vals.mean())
    v_item, df_item = _item_variance(scores, strata) if items else (0.0, math.inf)
    item_half = float(sps.t.ppf(0.5 + confidence / 2, df_item) * math.sqrt(v_item)) if items else math.nan
    if n == 1:
        # Stated fallback: the seed variance is unknown, so no verdict may rest on this interval.
        if v_item == 0:
            return Interval(mean, math.nan, math.nan, 1, math.nan, math.nan, math.nan, False,
                            "1 replicate: no interval")
        se = math.sqrt(v_item)
        t = sps.t.ppf(0.5 + confidence / 2, df_item)
        return Interval(mean, mean - t * se, mean + t * se, 1, math.nan, se, df_item, False,
                        "1 replicate: interval covers test items only, not seeds", item_half)
    sd = float(vals.std(ddof=1))
    v_rep = sd ** 2 / n
    var = v_rep + v_item
    if var == 0:
        return Interval(mean, mean, mean, n, 0.0, 0.0, math.inf, True, "zero variance", item_half)
    den = (v_rep ** 2 / (n - 1) if v_rep else 0.0) + (v_item ** 2 / df_item if v_item else 0.0)
    df = var ** 2 / den
    se = math.sqrt(var)
    t = sps.t.ppf(0.5 + confidence / 2, df)
    return Interval(mean, mean - t * se, mean + t * se, n, sd, se, df, True, "", item_half)


def paired(a: np.ndarray, b: np.ndarray, strata: np.ndarray | None = None, confidence: float = 0.95,
           items: bool = True) -> Interval:
    """Interval of metric(a) - metric(b) on the same replicates (seeds) and the same test items."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have one shape, got {a.shape} and {b.shape}")
    return interval(a - b, strata, confidence, items)


def verdict(iv: Interval, margin: float, threshold: float = 0.0, greater: bool = True) -> tuple[str, str]:
    """The rule for a claim "value > threshold" (greater=False: "value < threshold"), on the
    effect e = value - threshold (or threshold - value): holds when e's interval lies above 0;
    does not hold when it lies below `margin` (any effect is smaller than the smallest one of
    interest, or reversed); otherwise inconclusive. Returns (verdict, what would decide it)."""
    if not iv.complete:
        return OPEN, "at least 2 replicates (the seed variance is unknown with 1)" if iv.n == 1 else iv.note
    lo, hi = (iv.lo - threshold, iv.hi - threshold) if greater else (threshold - iv.hi, threshold - iv.lo)
    if lo > 0:
        return HOLDS, ""
    if hi < margin:
        return FAILS, ""
    if not math.isfinite(iv.df):  # a bootstrap over shifts: more replicates barely narrow it
        return OPEN, "more shifts (the interval is over shifts)"
    e = (iv.mean - threshold) if greater else (threshold - iv.mean)
    need = _replicates_needed(iv, max(e, margin - e))
    return OPEN, (f"about {need} replicates at this spread" if need else
                  "a bigger test set (the test-item part of the interval alone is too wide)")


def equivalent(iv: Interval, target: float, margin: float) -> tuple[str, str]:
    """The rule for a claim "value equals target within margin" (an equivalence test by the
    interval, as two one-sided tests): holds when the interval lies inside (target - margin,
    target + margin); does not hold when it lies wholly outside that band; else inconclusive."""
    if not iv.complete:
        return OPEN, "at least 2 replicates (the seed variance is unknown with 1)" if iv.n == 1 else iv.note
    if target - margin < iv.lo and iv.hi < target + margin:
        return HOLDS, ""
    if iv.lo > target + margin or iv.hi < target - margin:
        return FAILS, ""
    return OPEN, "more replicates or a bigger test set (the interval straddles the band's edge)"


def _replicates_needed(iv: Interval, half: float) -> int | None:
    """Replicates at which the interval's half-width (normal approximation) would fall to `half`,
    where the verdict would be decided at the present effect; None when the test-item part alone
    is wider than that."""
    if not math.isfinite(iv.sd) or iv.sd == 0:
        return None
    v_item = max(iv.se ** 2 - iv.sd ** 2 / iv.n, 0.0)
    target = (half / 1.96) ** 2 - v_item
    if target <= 0:
        return None
    return max(iv.n + 1, int(math.ceil(iv.sd ** 2 / target)))


def combine(verdicts: list[str]) -> str:
    """A claim made of parts: holds if every part holds; does not hold if any part does not;
    otherwise inconclusive."""
    if not verdicts:
        return OPEN
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else OPEN


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman of each row pair of finite [D, S] arrays with no constant row (average ranks for
    ties): accuracy.spearman for a whole bootstrap at once."""
    from scipy import stats

    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    return (ra * rb).sum(1) / np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))


def bootstrap_rank(x: np.ndarray, y: np.ndarray, draws: int, seed: int, confidence: float = 0.95,
                   replicated: bool = True) -> Interval:
    """Spearman between per-shift x ([S] or [S, R]) and per-shift, per-replicate y ([S, R]), with a
    percentile interval from resampling shifts and, within each, replicates. replicated=False: y
    involves no seed (dataset-side values), so one column is complete."""
    from selectbench.evaluation.accuracy import spearman

    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    x = np.asarray(x, dtype=np.float64)
    x = np.repeat(x[:, None], y.shape[1], 1) if x.ndim == 1 else x
    S, R = y.shape
    if S < 3:
        raise ValueError(f"a rank correlation needs at least 3 shifts, got {S}")
    point = spearman(x.mean(1), y.mean(1))
    rng = np.random.default_rng(seed)
    xs, ys = np.empty((draws, S)), np.empty((draws, S))
    for i in range(draws):
        s = rng.integers(0, S, S)
        r = rng.integers(0, R, (S, R))
        xs[i], ys[i] = x[s[:, None], r].mean(1), y[s[:, None], r].mean(1)
    if np.isfinite(xs).all() and np.isfinite(ys).all():
        keep = (np.ptp(xs, 1) > 0) & (np.ptp(ys, 1) > 0)
        vals = list(_spearman_rows(xs[keep], ys[keep]))
    else:  # a missing value drops that pair from its draw only: row by row
        vals = [spearman(a, b) for a, b in zip(xs, ys) if np.ptp(a) > 0 and np.ptp(b) > 0]
    if len(vals) < draws / 2:
        return Interval(point, math.nan, math.nan, R, math.nan, math.nan, math.nan, False,
                        "resamples too often constant: too few distinct shifts")
    lo, hi = np.quantile(vals, [0.5 - confidence / 2, 0.5 + confidence / 2])
    sd = float(np.std(vals, ddof=1))
    note = f"bootstrap over {S} shifts x {R} replicates, {len(vals)} draws"
    complete = R > 1 or not replicated
    return Interval(point, float(lo), float(hi), R, sd, sd, math.inf, complete,
                    note if complete else note + "; 1 replicate: seed variance not covered")
