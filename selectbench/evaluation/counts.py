"""Dataset statistics of a shift: class counts, Gini, long tail, coverage."""
from __future__ import annotations

import math

import numpy as np

from selectbench.evaluation.inputs import MetricInputError, _check_num_classes, _counts, _int_array


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
