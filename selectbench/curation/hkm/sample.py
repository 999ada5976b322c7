"""Balanced sampling from a fitted cluster tree: water-filling the budget down the levels, then a
closest or random draw inside each leaf."""
from __future__ import annotations

import numpy as np

from selectbench.core.errors import fail
from selectbench.curation.hkm.tree import Tree

SAMPLE_STRATEGIES = ("closest", "random")
LEAF_STRATEGIES = ("random", "closest")


def _segmented_water_fill(caps: np.ndarray, groups: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """Max-min fair split of ``budgets[g]`` among the items of each group ``g``, item i taking at
    most ``caps[i]``. Every group gets exactly min(budget, sum of its caps). After the equal
    share, the indivisible remainder goes one unit each to the largest uncapped items, lower
    index first among equal caps, so the result is deterministic."""
    m = len(caps)
    n_groups = len(budgets)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    caps = caps.astype(np.int64)
    order = np.lexsort((-np.arange(m), caps, groups))
    c = caps[order]
    g = groups[order]
    counts = np.bincount(groups, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(m) - start[g]
    cs0 = np.concatenate([[0], np.cumsum(c)])
    totals = cs0[start + counts] - cs0[start]
    budget = np.minimum(np.asarray(budgets, dtype=np.int64), totals)
    # With caps ascending inside a group, filling everyone to level c[j] costs
    # (sum of the caps before j) + c[j] * (items from j on); this is non-decreasing in j, so the
    # items that fit entirely under the budget form a prefix of each group.
    fill_cost = (cs0[:-1] - cs0[start][g]) + c * (counts[g] - pos)
    full = fill_cost <= budget[g]
    n_full = np.bincount(g[full], minlength=n_groups)
    spent = cs0[start + n_full] - cs0[start]
    rest = counts - n_full
    left = budget - spent
    level = np.where(rest > 0, left // np.maximum(rest, 1), 0)
    extra = left - level * rest
    alloc_sorted = np.where(full, c, level[g] + (pos >= counts[g] - extra[g]))
    alloc = np.empty(m, dtype=np.int64)
    alloc[order] = alloc_sorted
    return alloc


def water_fill(sizes: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` as equally as possible among bins of capacity ``sizes``.

    Returns int64 allocations with ``alloc <= sizes`` and ``alloc.sum() == min(n, sizes.sum())``;
    budget a small bin cannot use flows to the larger ones, and the last indivisible units go to
    the largest bins (lower index first among equal sizes).
    """
    sizes = np.asarray(sizes)
    if sizes.ndim != 1:
        raise fail("sizes", f"expected a 1-D array, got shape {sizes.shape}")
    if sizes.size and (sizes.dtype.kind not in "iu" and not np.all(sizes == np.round(sizes))):
        raise fail("sizes", "expected integer sizes")
    if sizes.size and sizes.min() < 0:
        raise fail("sizes", "sizes must be >= 0")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise fail("n", f"must be an integer >= 0, got {n!r}")
    return _segmented_water_fill(sizes.astype(np.int64), np.zeros(len(sizes), dtype=np.int64), np.array([n]))


def balanced_sample(
    tree: Tree,
    n: int,
    *,
    leaf: str = "random",
    multiplier: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Hierarchical balanced draw of ``n`` point indices from ``tree``.

    The budget is water-filled over the top-level clusters (capped by the points under each),
    then over each cluster's children, down to level 1, where the points are taken at random
    (``leaf="random"``) or closest to their centroid first (``leaf="closest"``). ``multiplier``
    (an integer, the reference's "maximum number of times a point is selected") raises every cap
    to ``multiplier`` x the cluster size; a leaf whose budget exceeds its size then takes all its
    points repeatedly, and the output can repeat indices. Returns exactly
    ``min(n, multiplier * N)`` indices, sorted (unique when ``multiplier == 1``).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise fail("n", f"must be an integer >= 0, got {n!r}")
    if leaf not in LEAF_STRATEGIES:
        raise fail("leaf", f"unknown {leaf!r}; allowed: {', '.join(LEAF_STRATEGIES)}")
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, np.integer)) or multiplier < 1:
        raise fail("multiplier", f"must be an integer >= 1, got {multiplier!r}")
    sizes = tree.sizes()
    top = tree.n_levels - 1
    budget = water_fill(sizes[top] * multiplier, int(n))
    for t in range(top - 1, -1, -1):
        budget = _segmented_water_fill(sizes[t] * multiplier, tree.assignments[t + 1], budget)
    lab = tree.assignments[0]
    size1 = sizes[0]
    whole = budget // np.maximum(size1, 1)
    part = budget - whole * size1
    if leaf == "random":
        key = np.random.default_rng(seed).random(tree.n_points)
    else:
        key = tree.point_sqdist
    order = np.lexsort((key, lab))
    sorted_lab = lab[order]
    rank = np.empty(tree.n_points, dtype=np.int64)
    rank[order] = np.arange(tree.n_points) - np.searchsorted(sorted_lab, sorted_lab, side="left")
    take = whole[lab] + (rank < part[lab])
    return np.repeat(np.arange(tree.n_points, dtype=np.int64), take)
