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
    """A seeded permutation of the labels over the items (class counts unchanged): the negative
    control's training set carries no information about which image is which class."""
    return np.random.default_rng(seed).permutation(np.asarray(labels))
