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
  ``ValueError`` (ordinary library callers can catch it as such).
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats
from scipy.special import xlogy

from selectbench.common import UserError

__all__ = [
    "MetricInputError",
    "topk_accuracy",
    "per_class_accuracy",
    "binomial_ci",
    "mean_accuracy_ci",
    "knn_classify",
    "inception_score",
    "mmd_rbf",
    "clip_score",
    "class_counts",
    "gini",
    "long_tail",
    "coverage",
    "count_summary",
    "spearman",
    "corruption_error",
    "label_precision",
    "estimate_label_noise",
]


class MetricInputError(UserError, ValueError):
    """Input to a metric has the wrong shape, range or type."""


# --------------------------------------------------------------------------- input helpers


def _np(x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, possibly on an accelerator
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _float_array(x, name: str, ndim: int, *, finite: bool = True) -> np.ndarray:
    a = _np(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise MetricInputError(f"{name}: expected numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if ndim == 2 and a.ndim == 1 and a.size == 0:
        a = a.reshape(0, 0)  # np.array([]) is a common spelling of "no rows"
    if a.ndim != ndim:
        raise MetricInputError(f"{name}: expected a {ndim}-D array, got shape {a.shape}")
    if finite and a.size and not np.isfinite(a).all():
        raise MetricInputError(f"{name}: contains NaN or inf")
    return a


def _int_array(x, name: str, *, lo: int | None = 0, hi: int | None = None) -> np.ndarray:
    """1-D integer labels in [lo, hi); float input is accepted only if integral."""
    a = _np(x)
    if a.ndim != 1:
        raise MetricInputError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise MetricInputError(f"{name}: expected integer labels, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.isfinite(a).all() or not np.all(a == np.round(a)):
            raise MetricInputError(f"{name}: expected integer labels, got non-integral values")
    a = a.astype(np.int64)
    if lo is not None and a.min() < lo:
        raise MetricInputError(f"{name}: value {int(a.min())} is below {lo}")
    if hi is not None and a.max() >= hi:
        raise MetricInputError(f"{name}: value {int(a.max())} is out of range for {hi} classes")
    return a


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise MetricInputError(f"num_classes: expected a positive int, got {num_classes!r}")
    return int(num_classes)


def _counts(counts, name: str = "counts") -> np.ndarray:
    c = _float_array(counts, name, 1)
    if (c < 0).any():
        raise MetricInputError(f"{name}: negative count {c.min()}")
    return c


def _z(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha: expected a value in (0, 1), got {alpha!r}")
    return float(stats.norm.ppf(1.0 - alpha / 2.0))


# --------------------------------------------------------------------------- accuracy


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


# --------------------------------------------------------------------------- confidence intervals


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


# --------------------------------------------------------------------------- kNN guidance


def knn_classify(bank, bank_labels, queries, num_classes: int, k: int = 10, temperature: float = 0.07) -> np.ndarray:
    """Weighted kNN class probabilities, shape ``[Q, num_classes]`` (rows sum to 1).

    As in the DINO kNN evaluation used by SELECT's self-supervised guidance: bank and queries are
    L2-normalised, each query takes its ``min(k, M)`` most cosine-similar bank entries (exact
    search, ``faiss.IndexFlatIP``), neighbour j votes for its label with weight
    ``exp(sim_j / temperature)``, and votes are summed per class. DINO leaves the sums
    unnormalised; here they are divided by their total so rows are probabilities (argmax and top-k
    are unchanged).

    Explicit behaviour for thin banks:

    * a class absent from the bank gets probability 0 for every query;
    * a class with fewer than k bank entries contributes the entries it has, nothing is padded;
    * ``k > M`` uses all M entries;
    * an empty bank (M = 0) gives uniform rows ``1 / num_classes`` - chance level, and with
      :func:`topk_accuracy`'s tie rule a top-1 prediction of class 0;
    * an all-zero vector has cosine similarity 0 to everything.
    """
    import faiss

    c = _check_num_classes(num_classes)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MetricInputError(f"k: expected a positive int, got {k!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise MetricInputError(f"temperature: expected a positive number, got {temperature!r}")
    q = _float_array(queries, "queries", 2)
    b = _float_array(bank, "bank", 2)
    y = _int_array(bank_labels, "bank_labels", hi=c)
    m = b.shape[0]
    if len(y) != m:
        raise MetricInputError(f"bank_labels: {len(y)} labels for {m} bank rows")
    if q.shape[0] == 0:
        return np.zeros((0, c))
    if m == 0:
        return np.full((q.shape[0], c), 1.0 / c)
    if b.shape[1] != q.shape[1]:
        raise MetricInputError(f"queries: dimension {q.shape[1]} differs from the bank's {b.shape[1]}")

    def unit(x):
        return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)

    index = faiss.IndexFlatIP(b.shape[1])
    index.add(unit(b))
    kk = min(int(k), m)
    sims, nn = index.search(unit(q), kk)
    # Subtracting each row's best similarity cancels in the normalisation and keeps exp() finite
    # for any temperature.
    w = np.exp((sims.astype(np.float64) - sims[:, :1]) / float(temperature))
    rows = np.repeat(np.arange(q.shape[0]), kk)
    votes = np.bincount(rows * c + y[nn.ravel()], weights=w.ravel(), minlength=q.shape[0] * c)
    votes = votes.reshape(q.shape[0], c)
    return votes / votes.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- image quality


def inception_score(probs, splits: int = 1):
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` as ``(mean, std)`` over ``splits``.

    ``probs`` are softmax outputs ``[N, C]`` (rows must sum to 1 within 1e-3; pass probabilities,
    not logits). Following Salimans et al. (2016), rows are cut into ``splits`` consecutive
    near-equal parts, p(y) is the mean row of each part, and the std is the population std
    (ddof=0) of the per-part scores, so ``splits=1`` gives std 0. The score lies in ``[1, C]``:
    1 when every row equals the marginal (e.g. a uniform classifier), C for confident one-hot
    rows spread evenly over all C classes. Zero rows give ``(nan, nan)``.
    """
    p = _float_array(probs, "probs", 2)
    n = p.shape[0]
    if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)) or splits < 1:
        raise MetricInputError(f"splits: expected a positive int, got {splits!r}")
    if n == 0:
        return float("nan"), float("nan")
    if splits > n:
        raise MetricInputError(f"splits: {splits} splits for only {n} rows")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3, rtol=0):
        raise MetricInputError("probs: rows must be probabilities (non-negative, summing to 1)")
    bounds = (np.arange(splits + 1) * n) // splits
    scores = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = p[lo:hi]
        marginal = part.mean(axis=0, keepdims=True)
        # xlogy gives 0*log(0) = 0, the KL convention for classes a row never predicts.
        kl = (xlogy(part, part) - xlogy(part, marginal)).sum(axis=1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def mmd_rbf(x, y, sigma: float = 10.0, scale: float = 1000.0, *, chunk: int = 1024) -> float:
    """CMMD-style squared MMD between embedding sets ``x [N, D]`` and ``y [M, D]``.

    The estimator of the CMMD reference implementation (Jayasumana et al., CVPR 2024):
    Gaussian RBF kernel ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))`` with sigma = 10, and
    ``scale * (mean K_xx + mean K_yy - 2 mean K_xy)`` where each mean runs over *all* pairs,
    diagonal included. The paper's text calls this unbiased, but its released code averages the
    full kernel matrices (a V-statistic, slightly biased upward); that is what is reproduced here,
    so that numbers compare with published CMMD values and identical sets give exactly 0.

    CMMD feeds L2-normalised CLIP image embeddings; this function does not normalise, so pass
    the embeddings as CMMD would. Kernel blocks of ``chunk x chunk`` are computed in float64 with
    torch (on the inputs' device when they are torch tensors), so memory stays bounded for large
    sets. ``nan`` when either set is empty.
    """
    import torch

    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise MetricInputError(f"sigma: expected a positive number, got {sigma!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise MetricInputError(f"chunk: expected a positive int, got {chunk!r}")
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    xs = torch.as_tensor(np.ascontiguousarray(_float_array(x, "x", 2)), dtype=torch.float64, device=device)
    ys = torch.as_tensor(np.ascontiguousarray(_float_array(y, "y", 2)), dtype=torch.float64, device=device)
    if xs.shape[0] == 0 or ys.shape[0] == 0:
        return float("nan")
    if xs.shape[1] != ys.shape[1]:
        raise MetricInputError(f"y: dimension {ys.shape[1]} differs from x's {xs.shape[1]}")
    gamma = 1.0 / (2.0 * float(sigma) ** 2)

    def kernel_mean(a, b):
        a_sq = (a * a).sum(dim=1)
        b_sq = (b * b).sum(dim=1)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for i in range(0, a.shape[0], chunk):
            for j in range(0, b.shape[0], chunk):
                d2 = a_sq[i : i + chunk, None] + b_sq[None, j : j + chunk] - 2.0 * a[i : i + chunk] @ b[j : j + chunk].T
                # The expansion can go slightly negative for (near-)identical rows.
                total += torch.exp(-gamma * d2.clamp_min_(0.0)).sum()
        return total / (a.shape[0] * b.shape[0])

    with torch.no_grad():
        value = kernel_mean(xs, xs) + kernel_mean(ys, ys) - 2.0 * kernel_mean(xs, ys)
    return float(scale * value)


def clip_score(img_emb, txt_emb, *, weight: float = 100.0) -> float:
    """Mean over pairs of ``weight * max(cos(img_i, txt_i), 0)``.

    Default ``weight=100`` is the torchmetrics / common "CLIP score" scale (0-100). Hessel et al.'s
    CLIPScore uses the same formula with ``weight=2.5``; pass that to reproduce it. Clipping at 0
    happens per pair, before averaging, as both definitions do. Embeddings are L2-normalised here
    (a zero vector has cosine 0). ``nan`` for zero pairs.
    """
    a = _float_array(img_emb, "img_emb", 2)
    b = _float_array(txt_emb, "txt_emb", 2)
    if a.shape[0] != b.shape[0]:
        raise MetricInputError(f"txt_emb: {b.shape[0]} texts for {a.shape[0]} images")
    if a.shape[0] == 0:
        return float("nan")
    if a.shape[1] != b.shape[1]:
        raise MetricInputError(f"txt_emb: dimension {b.shape[1]} differs from img_emb's {a.shape[1]}")
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    cos = np.einsum("nd,nd->n", a, b) / (na * nb)
    return float(np.mean(weight * np.maximum(cos, 0.0)))


# --------------------------------------------------------------------------- dataset analytics


def class_counts(labels, num_classes: int) -> np.ndarray:
    """Images per class, shape ``[num_classes]`` (int64, zeros for empty classes)."""
    c = _check_num_classes(num_classes)
    y = _int_array(labels, "labels", hi=c)
    return np.bincount(y, minlength=c).astype(np.int64)


def gini(counts) -> float:
    """Gini coefficient of the per-class counts: ``sum_ij |x_i - x_j| / (2 C^2 mean(x))``.

    0 when every class has the same count; ``(C - 1) / C`` (approaching 1) when one class holds
    every image. Empty classes count (a shift that misses classes is imbalanced). ``nan`` when
    there are no classes or no images.
    """
    x = np.sort(_counts(counts))
    n = len(x)
    total = x.sum()
    if n == 0 or total == 0:
        return float("nan")
    ranks = np.arange(1, n + 1)
    return float(2.0 * np.sum(ranks * x) / (n * total) - (n + 1.0) / n)


def long_tail(counts, threshold: float) -> dict:
    """Long-tail statistics for classes with strictly fewer than ``threshold`` images.

    Empty classes are included in the tail (the SELECT table's "classes < 500 imgs" counts them).
    Returns ``classes_below`` (int), ``share_of_classes_below`` (of all classes) and
    ``share_of_images_in_tail_classes`` (of all images; ``nan`` if there are no images).
    """
    x = _counts(counts)
    if not isinstance(threshold, (int, float, np.number)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise MetricInputError(f"threshold: expected a finite number, got {threshold!r}")
    tail = x < threshold
    total = x.sum()
    return {
        "classes_below": int(tail.sum()),
        "share_of_classes_below": float(tail.mean()) if len(x) else float("nan"),
        "share_of_images_in_tail_classes": float(x[tail].sum() / total) if total > 0 else float("nan"),
    }


def coverage(counts) -> int:
    """Number of classes with at least one image."""
    return int((_counts(counts) > 0).sum())


def count_summary(counts) -> dict:
    """``min``, ``median``, ``max``, total ``images`` and ``coverage`` of per-class counts.

    ``median`` is a float (an even number of classes averages the middle two, e.g. 215.5); the rest
    are ints when the counts are integral.
    """
    x = _counts(counts)
    if len(x) == 0:
        raise MetricInputError("counts: no classes")

    def num(v):
        return int(v) if float(v).is_integer() else float(v)

    return {
        "min": num(x.min()),
        "median": float(np.median(x)),
        "max": num(x.max()),
        "images": num(x.sum()),
        "coverage": int((x > 0).sum()),
    }


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


# --------------------------------------------------------------------------- label noise


def label_precision(assigned, truth, num_classes: int | None = None):
    """Precision of curated labels against ground truth: ``(overall, per_class)``.

    ``overall`` is the fraction of samples whose assigned label equals the truth; ``truth == -1``
    marks a sample that belongs to none of the classes and always counts as wrong. ``per_class[c]``
    is the precision of assigned class c (of the samples labelled c, the share truly c), ``nan``
    for classes nothing was assigned to. Its complement is the per-class label-noise rate that
    :func:`estimate_label_noise` estimates. ``num_classes`` defaults to one more than the largest
    label seen. Empty input gives ``nan`` overall.
    """
    hi = None if num_classes is None else _check_num_classes(num_classes)
    a = _int_array(assigned, "assigned", hi=hi)
    t = _int_array(truth, "truth", lo=-1, hi=hi)
    if len(a) != len(t):
        raise MetricInputError(f"truth: {len(t)} labels for {len(a)} assigned labels")
    if hi is None:
        hi = int(max(a.max(initial=-1), t.max(initial=-1))) + 1
    correct = (a == t).astype(np.float64)
    assigned_n = np.bincount(a, minlength=hi).astype(np.float64)
    right = np.bincount(a, weights=correct, minlength=hi)
    per_class = np.where(assigned_n > 0, right / np.maximum(assigned_n, 1), np.nan)
    overall = float(correct.mean()) if len(a) else float("nan")
    return overall, per_class


def _out_of_fold_probs(x: np.ndarray, y: np.ndarray, c: int, folds: int, seed: int):
    """Out-of-fold probabilities [N, C] and, per sample, whether its own label was in the training fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probs = np.zeros((len(y), c))
    seen = np.zeros(len(y), dtype=bool)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Classes smaller than `folds` are legitimate in long-tailed shifts; they just miss from
        # some training folds, which the column mapping and `seen` below handle.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(x, y))
    for train, test in splits:
        present = np.unique(y[train])
        seen[test] = np.isin(y[test], present)
        if len(present) == 1:
            probs[np.ix_(test, present)] = 1.0
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(x[train], y[train])
        classes = model[-1].classes_
        probs[np.ix_(test, classes)] = model.predict_proba(x[test])
    return probs, seen


def estimate_label_noise(features, labels, num_classes: int, folds: int = 5, seed: int = 0):
    """Estimate the label-noise rate without ground truth: ``(noise_rate, per_class_noise)``.

    Confident learning (Northcutt, Jiang & Chuang, JAIR 2021) on out-of-fold predicted
    probabilities:

    1. ``folds``-fold stratified cross-validation (shuffled with ``seed``) of a multinomial
       logistic regression on standardised ``features`` gives every sample a probability vector
       from a model that never saw its label.
    2. Threshold of class j = mean probability of j over the samples labelled j (its average
       self-confidence).
    3. Confident joint ``C[i, j]``: samples labelled i whose probability of j reaches j's threshold;
       a sample passing several thresholds goes to its most probable such class, one passing none
       is left out.
    4. Each row is rescaled to the number of samples labelled i (calibration), giving the estimated
       joint of (given label, true label).

    ``noise_rate`` is the off-diagonal share of that joint, i.e. the estimated fraction of samples
    whose label is wrong; ``per_class_noise[i]`` is the off-diagonal share of row i, the estimated
    fraction of samples *labelled* i that are wrong - the complement of :func:`label_precision`'s
    per-class value. Classes with no samples are ``nan``. With fewer than two classes present there
    is nothing to confuse them with and the estimate is 0. A class with a single sample never
    appears in the training fold that predicts that sample, so it cannot be assessed: its
    ``per_class_noise`` is ``nan``, it counts as clean in ``noise_rate``, and it takes no part in
    the other classes' estimates. Row calibration extrapolates a class's confidently-counted
    samples to all of its samples. The estimate depends on how separable
    the features are: label noise that the features cannot tell apart from signal is not found.
    """
    c = _check_num_classes(num_classes)
    x = _float_array(features, "features", 2)
    y = _int_array(labels, "labels", hi=c)
    if len(y) != x.shape[0]:
        raise MetricInputError(f"labels: {len(y)} labels for {x.shape[0]} feature rows")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise MetricInputError(f"folds: expected an int >= 2, got {folds!r}")
    n_per_class = np.bincount(y, minlength=c).astype(np.float64)
    present = n_per_class > 0
    per_class = np.where(present, 0.0, np.nan)
    if len(y) == 0:
        return float("nan"), per_class
    if present.sum() < 2:
        return 0.0, per_class
    if folds > len(y):
        raise MetricInputError(f"folds: {folds} folds for only {len(y)} samples")

    # StratifiedKFold needs at least `folds` members in the largest class; tiny shifts get fewer folds.
    folds = min(int(folds), int(n_per_class.max()))
    if folds < 2:
        return float("nan"), np.full(c, np.nan)
    probs, seen = _out_of_fold_probs(x, y, c, int(folds), int(seed))
    # A sample whose class was missing from its training fold (a class with a single sample) has a
    # self-confidence of 0 that says nothing about its label; letting it into the mean would give
    # that class a threshold of 0, which every other sample's tiny probability passes.
    self_conf = probs[np.arange(len(y)), y] * seen
    n_seen = np.bincount(y[seen], minlength=c).astype(np.float64)
    thresholds = np.where(n_seen > 0, np.bincount(y, weights=self_conf, minlength=c) / np.maximum(n_seen, 1), np.inf)
    # The small slack keeps a sample whose probability equals the mean (e.g. all equal) above it
    # despite rounding in the mean; a zero probability never makes a sample confident.
    confident = (probs >= thresholds[None, :] - 1e-12) & (probs > 0)
    counted = confident.any(axis=1) & seen
    guess = np.argmax(np.where(confident, probs, -np.inf), axis=1)
    joint = np.bincount(y[counted] * c + guess[counted], minlength=c * c).reshape(c, c).astype(np.float64)

    row = joint.sum(axis=1)
    calibrated = joint * np.where(row > 0, n_per_class / np.maximum(row, 1), 0.0)[:, None]
    diag = np.diag(calibrated).copy()
    # A class with an assessable sample always has a row (its most self-confident such sample
    # passes its own threshold). One without (a single sample, absent from its own training fold)
    # is not assessed: nan per class, and clean in the overall rate for want of evidence.
    unassessed = present & (row == 0)
    diag[unassessed] = n_per_class[unassessed]
    per_class = np.where(present & ~unassessed, 1.0 - diag / np.maximum(n_per_class, 1), np.nan)
    noise_rate = float(1.0 - diag.sum() / len(y))
    return noise_rate, per_class
