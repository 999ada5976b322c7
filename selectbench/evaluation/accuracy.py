"""Utility metrics of the SELECT benchmark as pure functions (no file I/O).

Conventions shared by every function here:

* Inputs may be numpy arrays, lists or CPU/GPU torch tensors; outputs are numpy arrays or Python
  floats/ints.
* Labels are integer class indices in ``[0, num_classes)``.
* Accuracies and error rates are fractions in ``[0, 1]``, never percentages.
* A quantity that is undefined for the given input (accuracy of zero samples, rank correlation of
  two points) is ``nan`` rather than an exception, so a sweep over shifts can report "no data" for
  one cell without aborting the whole table.
* Malformed input (wrong shape, label out of range, negative count, non-finite scores) raises
  :class:`MetricInputError`, which is both a ``UserError`` (a stage reports it as one line) and a
  ``ValueError`` (ordinary library callers can catch it as such)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from selectbench.evaluation.inputs import MetricInputError, _check_num_classes, _float_array, _int_array, _np, _z


def topk_accuracy(logits_or_probs, labels, k: int = 1) -> float:
    """Fraction of rows whose label is among the k highest scores.

    Ties are broken towards the lower class index, exactly like ``np.argmax`` for ``k=1``: a
    constant-score classifier therefore always predicts class 0 instead of being counted right
    for every label. Scores may be logits or probabilities (the ranking is the same). ``k`` larger
    than the number of classes counts every row as correct. ``nan`` for zero rows.
    """
    s = _float_array(logits_or_probs, "logits_or_probs", 2)
    n, c = s.shape
    y = _int_array(labels, "labels", hi=c)
    if len(y) != n:
        raise MetricInputError(f"labels: {len(y)} labels for {n} score rows")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MetricInputError(f"k: expected a positive int, got {k!r}")
    if n == 0:
        return float("nan")
    s_true = s[np.arange(n), y][:, None]
    before = (s > s_true) | ((s == s_true) & (np.arange(c)[None, :] < y[:, None]))
    return float((before.sum(axis=1) < k).mean())


def true_class_probability(logits, labels) -> np.ndarray:
    """Per row, the softmax probability of its label (float64 [N]): the negative control's item
    score, whose mean is 1/classes for a model that learned nothing from its labels."""
    s = _float_array(logits, "logits", 2)
    n, c = s.shape
    y = _int_array(labels, "labels", hi=c)
    if len(y) != n:
        raise MetricInputError(f"labels: {len(y)} labels for {n} score rows")
    if n == 0:
        return np.empty(0)
    z = s - s.max(axis=1, keepdims=True)  # shift by the row max so exp cannot overflow
    p = np.exp(z)
    return p[np.arange(n), y] / p.sum(axis=1)


def per_class_accuracy(pred, labels, num_classes: int) -> np.ndarray:
    """Accuracy among the samples of each true class, shape ``[num_classes]``.

    Entry c is ``mean(pred[labels == c] == c)``; it is ``nan`` for a class with no samples in
    ``labels`` (no evidence, which is different from an accuracy of 0). ``pred`` may hold any
    integers (e.g. -1 for "abstain"), which simply count as wrong.
    """
    c = _check_num_classes(num_classes)
    y = _int_array(labels, "labels", hi=c)
    p = _int_array(pred, "pred", lo=None, hi=None)
    if len(p) != len(y):
        raise MetricInputError(f"pred: {len(p)} predictions for {len(y)} labels")
    total = np.bincount(y, minlength=c).astype(np.float64)
    correct = np.bincount(y, weights=(p == y).astype(np.float64), minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def _wilson(p, n, z):
    """Wilson score bounds for proportion p from n trials (arrays broadcast; n > 0)."""
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z / denom * np.sqrt(np.maximum(p * (1.0 - p) / n + z2 / (4.0 * n * n), 0.0))
    # At p = 0 or 1 the bound is exactly 0 or 1; rounding would otherwise leave 1 - 1e-16,
    # which reads as "the observed accuracy is outside its own interval".
    lo = np.where(p <= 0.0, 0.0, np.clip(centre - half, 0.0, 1.0))
    hi = np.where(p >= 1.0, 1.0, np.clip(centre + half, 0.0, 1.0))
    return lo, hi


def binomial_ci(successes, n, alpha: float = 0.05):
    """Wilson score interval ``(lo, hi)`` for a binomial proportion ``successes / n``.

    Two-sided at level ``1 - alpha``, without continuity correction (Wilson 1927; "method 3" of
    Newcombe 1998). Chosen over the normal (Wald) interval because it keeps a sensible width at
    accuracies of 0 or 1 and for small n. ``n == 0`` gives ``(nan, nan)``. Arrays broadcast and
    give arrays; scalars give floats.
    """
    z = _z(alpha)
    s = _float_array(successes, "successes", np.ndim(_np(successes)))
    m = _float_array(n, "n", np.ndim(_np(n)))
    s, m = np.broadcast_arrays(s, m)
    if (m < 0).any() or (s < 0).any() or (s > m).any():
        raise MetricInputError("successes/n: need 0 <= successes <= n")
    ok = m > 0
    safe_n = np.where(ok, m, 1.0)
    lo, hi = _wilson(s / safe_n, safe_n, z)
    lo, hi = np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def mean_accuracy_ci(accs: Sequence[float], ns: Sequence[int], alpha: float = 0.05):
    """Unweighted mean accuracy over tasks and its ``1 - alpha`` CI: ``(mean, lo, hi)``.

    Method (binomial, as the SELECT transfer table asks for): each task's accuracy is a binomial
    proportion from ``ns[i]`` independent test samples, tasks are independent, and the mean
    ``m = sum(accs) / T`` is treated as a proportion from an effective number of trials
    ``n_eff = T**2 / sum(1 / ns)`` (the n for which a single binomial has the variance that the
    mean of T binomials with a common accuracy has). The interval is the Wilson score interval
    for ``m`` with ``n_eff`` trials. Consequences:

    * one task: exactly :func:`binomial_ci` of that task;
    * equal ``ns``: exactly the pooled Wilson interval of all test samples;
    * tasks with different accuracies: conservative (for fixed mean, the variance of a mean of
      binomials is largest when all accuracies are equal);
    * accuracies of 0 or 1 still give a non-degenerate interval, unlike a normal interval.

    ``accs`` are fractions in [0, 1]. Empty input gives ``(nan, nan, nan)``.
    """
    z = _z(alpha)
    a = _float_array(accs, "accs", 1)
    n = _float_array(ns, "ns", 1)
    if len(a) != len(n):
        raise MetricInputError(f"ns: {len(n)} sizes for {len(a)} accuracies")
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan")
    if (a < 0).any() or (a > 1).any():
        raise MetricInputError("accs: expected fractions in [0, 1] (not percentages)")
    if (n <= 0).any():
        raise MetricInputError("ns: every task needs at least one test sample")
    t = len(a)
    mean = float(a.mean())
    n_eff = t * t / float(np.sum(1.0 / n))
    lo, hi = _wilson(mean, n_eff, z)
    return mean, float(lo), float(hi)


def spearman(a, b) -> float:
    """Spearman rank correlation of ``a`` and ``b`` (average ranks for ties).

    Pairs where either value is NaN are dropped (a class with no validation images has NaN
    per-class accuracy). ``nan`` if fewer than 3 pairs remain or either side is constant.
    """
    x = _float_array(a, "a", 1, finite=False)
    y = _float_array(b, "b", 1, finite=False)
    if len(x) != len(y):
        raise MetricInputError(f"b: length {len(y)} differs from a's {len(x)}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy import stats

    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    return float(np.dot(rx, ry) / math.sqrt(np.dot(rx, rx) * np.dot(ry, ry)))


def corruption_error(err_model, err_baseline) -> float:
    """Mean corruption error (mCE, Hendrycks & Dietterich 2019) as a ratio.

    Inputs are top-1 *error rates* shaped ``[corruptions, severities]``; a 1-D ``[K]`` input means
    K corruptions with one (already aggregated) severity each. For each corruption,
    ``CE_c = sum_s err_model[c, s] / sum_s err_baseline[c, s]``; the result is ``mean_c CE_c``.
    1.0 means "as robust as the baseline"; multiply by 100 for the paper's percent.
    """
    m = _np(err_model)
    b = _np(err_baseline)
    m = _float_array(m[:, None] if m.ndim == 1 else m, "err_model", 2)
    b = _float_array(b[:, None] if b.ndim == 1 else b, "err_baseline", 2)
    if m.shape != b.shape:
        raise MetricInputError(f"err_baseline: shape {b.shape} differs from err_model's {m.shape}")
    if m.size == 0:
        return float("nan")
    if (m < 0).any() or (b < 0).any():
        raise MetricInputError("err_model/err_baseline: error rates must be non-negative")
    denom = b.sum(axis=1)
    if (denom == 0).any():
        raise MetricInputError("err_baseline: a corruption has zero baseline error; its CE is undefined")
    return float(np.mean(m.sum(axis=1) / denom))
