"""The per-shift image budget: shifts are compared at a matched size, so that a verdict is about
what a strategy selects, not how much of it."""
from __future__ import annotations

import numpy as np


def match_budget(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted rows of a class-stratified draw of `n` items: each class keeps its share of the shift
    (largest remainder, ties to the lower class id), rows within a class are drawn uniformly, so a
    balanced shift stays balanced and a skewed one keeps its skew. All rows when n >= len(labels)."""
    labels = np.asarray(labels, dtype=np.int64)
    if n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    left = n - int(quota.sum())
    order = np.lexsort((classes, -(exact - quota)))  # largest remainder first, then class id
    quota[order[:left]] += 1
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(rows)) if rows else np.empty(0, np.int64)


def shuffle_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """The negative control's labels: the same label counts, reassigned so that within every true
    class each label appears in proportion to its count (within one item), not just in expectation.

    A plain permutation leaves chance correlations between class and label in a finite sample
    (1,000 items: 4-11% of a class kept its true label), which a model learns and which moves its
    test accuracy off chance in either direction. Here the items are ordered by class (seeded order
    within a class) and given a label sequence in which every label is spread evenly (each label's
    k-th copy at position (k + offset) x N / count, seeded offsets), so any run of consecutive items,
    a class's block included, holds each label at its overall rate."""
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        return labels.copy()
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    offsets = rng.permutation(len(values)) + 0.5
    pos = np.concatenate([(np.arange(c) + offsets[i] / len(values)) * n / c for i, c in enumerate(counts)])
    seq = np.repeat(values, counts)[np.argsort(pos, kind="stable")]
    order = np.lexsort((rng.random(n), labels))  # by class, seeded order within a class
    out = np.empty_like(labels)
    out[order] = seq
    return out
