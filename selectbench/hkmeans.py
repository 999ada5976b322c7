"""Clustering-based curation (Vo et al., arXiv 2405.15613): hierarchical k-means + balanced sampling.

Plain k-means puts more centroids in dense regions, so drawing equally per cluster still favours
dominant concepts. The method stacks k-means levels (level t clusters the centroids of level t-1),
moves centroids away from dense regions with resampling steps, and then draws a subset by
splitting the budget equally among the top-level clusters and recursing down the tree.

Design choices (the reference, facebookresearch/ssl-data-curation, is the yardstick):

* Assignment on CPU is one float32 BLAS product per block of rows followed by an argmin while
  the block is in cache (a little faster than faiss ``IndexFlatL2.search`` here, and it takes
  any subset of rows and centroids); on GPU it is faiss.
  Memory is O(block * K) on top of the data; the centroid update is a sparse one-hot product,
  accumulated in float64 across chunks.
* Lloyd stops early only when an iteration leaves every assignment unchanged. That state is a
  fixed point, so the result is the one the full ``n_iter`` iterations would give. On CPU each
  iteration searches only what the update can change (``_lloyd_incremental``): points whose
  centroid moved against all centroids, the others against the moved centroids only. The
  iterates are those of a full search.
* k-means++ seeding (greedy, 2 + log K candidates per step, as the reference) runs by default on
  a uniform subsample of ``init_sample`` = 16 points per cluster; ``init_sample=None`` seeds on
  all points as the reference does. On the benchmark this cut a fit's time by a quarter with
  the same balance (bench/README-hkm.md).
* The data are centred before clustering (k-means is translation invariant): the
  ``|x|^2 - 2x.c + |c|^2`` expansion loses precision when the data sit far from the origin, and
  after centring exact duplicates have distance exactly 0, which is how k-means++ detects that
  there are fewer distinct points than clusters.
* Fewer points (or distinct points) than clusters reduces K with a ``ClusterCountWarning``
  rather than failing, as the reference does with ``min(n, K)``; clusters that end up empty are
  dropped, so every cluster in a ``Tree`` holds at least one point and the next level clusters
  only real centroids.
* Empty clusters during Lloyd keep their previous centroid (the reference's rule).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController, threadpool_limits
from tqdm import tqdm

from selectbench.common import UserError, atomic_save_npy, fail, stage_main, write_json

TREE_FORMAT = 1
SAMPLE_STRATEGIES = ("closest", "random")
LEAF_STRATEGIES = ("random", "closest")
INITS = ("kmeans++", "random")
# Points per cluster in the uniform subsample that k-means++ seeding runs on (fit(init_sample=)).
DEFAULT_INIT_SAMPLE = 16


class ClusterCountWarning(UserWarning):
    """A level ends up with fewer clusters than requested (too few or duplicate points)."""


# --------------------------------------------------------------------------------------------
# Tree
# --------------------------------------------------------------------------------------------


@dataclass
class Tree:
    """Result of :func:`fit`.

    ``assignments[0][i]`` is the level-1 cluster of point ``i``; ``assignments[t][c]`` (t >= 1) is
    the level-(t+1) cluster of level-t cluster ``c``. ``centroids[t]`` has one row per level-(t+1)
    cluster, in the input's coordinates. ``point_sqdist[i]`` is the squared L2 distance of point
    ``i`` to its level-1 centroid (used by closest-to-centroid leaf sampling).
    """

    assignments: list[np.ndarray]
    centroids: list[np.ndarray]
    point_sqdist: np.ndarray
    levels_requested: list[int]

    @property
    def n_points(self) -> int:
        return int(len(self.assignments[0]))

    @property
    def n_levels(self) -> int:
        return len(self.assignments)

    @property
    def n_clusters(self) -> list[int]:
        return [int(len(c)) for c in self.centroids]

    def sizes(self) -> list[np.ndarray]:
        """Number of points under each cluster, per level (level 1 first)."""
        out = []
        counts = None
        for t, a in enumerate(self.assignments):
            k = len(self.centroids[t])
            if t == 0:
                counts = np.bincount(a, minlength=k).astype(np.int64)
            else:
                counts = _group_sum(counts, a, k)
            out.append(counts)
        return out

    def labels(self, level: int) -> np.ndarray:
        """Cluster of every point at ``level`` (1-based)."""
        if not 1 <= level <= self.n_levels:
            raise fail("level", f"must be in 1..{self.n_levels}, got {level}")
        lab = self.assignments[0]
        for a in self.assignments[1:level]:
            lab = a[lab]
        return lab

    def save(self, path: str | os.PathLike) -> None:
        arrays = {
            "format": np.array(TREE_FORMAT),
            "n_levels": np.array(self.n_levels),
            "levels_requested": np.asarray(self.levels_requested, dtype=np.int64),
            "point_sqdist": np.asarray(self.point_sqdist, dtype=np.float32),
        }
        for t in range(self.n_levels):
            arrays[f"assignment_{t}"] = np.asarray(self.assignments[t], dtype=np.int64)
            arrays[f"centroids_{t}"] = np.asarray(self.centroids[t], dtype=np.float32)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        # A file object stops np.savez from appending ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tree":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: tree file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable tree file ({e})") from None
        if "format" not in data or int(data["format"]) != TREE_FORMAT:
            raise UserError(f"{path}: not a hierarchical k-means tree (format {TREE_FORMAT})")
        try:
            n_levels = int(data["n_levels"])
            tree = cls(
                [data[f"assignment_{t}"].astype(np.int64) for t in range(n_levels)],
                [data[f"centroids_{t}"] for t in range(n_levels)],
                data["point_sqdist"],
                [int(v) for v in data["levels_requested"]],
            )
        except KeyError as e:
            raise UserError(f"{path}: tree file lacks {e.args[0]}") from None
        _check_tree(tree, str(path))
        return tree


def _check_tree(tree: Tree, where: str) -> None:
    if tree.n_levels < 1:
        raise UserError(f"{where}: tree has no levels")
    if len(tree.point_sqdist) != tree.n_points:
        raise UserError(f"{where}: point_sqdist has {len(tree.point_sqdist)} rows for {tree.n_points} points")
    for t, a in enumerate(tree.assignments):
        n_children = tree.n_points if t == 0 else len(tree.centroids[t - 1])
        k = len(tree.centroids[t])
        if a.ndim != 1 or len(a) != n_children:
            raise UserError(f"{where}: level {t + 1} assignment has {a.shape} entries, expected {n_children}")
        if len(a) and (a.min() < 0 or a.max() >= k):
            raise UserError(f"{where}: level {t + 1} assignment points outside its {k} clusters")


def _group_sum(values: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    # bincount with weights sums in float64, exact for integer counts far beyond any data size.
    return np.rint(np.bincount(groups, weights=values, minlength=k)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# k-means building blocks
# --------------------------------------------------------------------------------------------


# Rows per block of the CPU assignment: the block's distance matrix (block x K floats) then stays
# in the per-core cache for the argmin that follows the product. Measured on the 2-core Xeon this
# was written on (10,000 x 200 x 64, one thread): 1,024-4,096 within 7% of each other, 2,048 the
# fastest, 256 a third slower, one block of all rows 9% slower.
_ASSIGN_BLOCK = 2048


class _Assigner:
    """Nearest-centroid search, over row blocks so memory stays O(block * K).

    On CPU it is one BLAS product per block, ``[x, 1] @ [-2c, |c|^2]^T`` (|x|^2 is added to the
    winner only), followed by an argmin over the block while it is still in cache. It measured
    10-13% faster than faiss ``IndexFlatL2.search(k=1)`` (same product, generic top-k heap) on
    one thread at 10,000-20,000 x 200 x 64, with identical labels; more to the point, it searches
    any subset of rows against any subset of centroids without building an index, which the
    incremental Lloyd iterations need. ``gpu=True`` uses faiss GPU indexes.
    """

    def __init__(self, dim: int, chunk: int, gpu: bool, pool: ThreadPoolExecutor | None = None, workers: int = 1):
        self.dim = dim
        self.workers = workers
        self.block = max(1, min(chunk, _ASSIGN_BLOCK))
        self.chunk = chunk
        self.pool = pool
        self.res = None
        if gpu:
            if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
                raise fail("gpu", "this faiss build sees no GPU (faiss-cpu or no device)")
            self.res = faiss.StandardGpuResources()

    def __call__(
        self, x: np.ndarray, centroids: np.ndarray, xsq: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, squared distances) of the rows of ``x``; ``xsq`` is |x|^2 per row if known."""
        n = len(x)
        labels = np.empty(n, dtype=np.int64)
        sqd = np.empty(n, dtype=np.float32)
        if self.res is not None:
            index = faiss.GpuIndexFlatL2(self.res, self.dim)
            index.add(np.ascontiguousarray(centroids, dtype=np.float32))
            for s in range(0, n, self.chunk):
                d, i = index.search(x[s : s + self.chunk], 1)
                labels[s : s + self.chunk] = i[:, 0]
                sqd[s : s + self.chunk] = d[:, 0]
        else:
            labels, part = self.partial(x, centroids)
            sqd = part + (np.einsum("ij,ij->i", x, x) if xsq is None else xsq)
        # The expansion can go slightly negative for a point on its centroid.
        np.maximum(sqd, 0, out=sqd)
        return labels, sqd

    def partial(
        self, x: np.ndarray, centroids: np.ndarray, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """CPU: for ``x[rows]`` (all rows when None), the nearest centroid and the minimum of
        |c|^2 - 2 x.c, i.e. the squared distance less |x|^2. Ties go to the lower index."""
        n = len(x) if rows is None else len(rows)
        k, dim = centroids.shape
        labels = np.empty(n, dtype=np.int64)
        part = np.empty(n, dtype=np.float32)
        if n == 0:
            return labels, part
        ca = np.empty((dim + 1, k), dtype=np.float32)
        np.multiply(centroids.T, -2.0, out=ca[:dim])
        ca[dim] = np.einsum("ij,ij->i", centroids, centroids)
        b = min(self.block, n)
        idx = np.arange(b)

        def run(starts):
            # Each worker owns its buffers; numpy releases the GIL in the product and argmin.
            xa = np.empty((b, dim + 1), dtype=np.float32)
            xa[:, dim] = 1.0
            dist = np.empty((b, k), dtype=np.float32)
            for s in starts:
                e = min(n, s + b)
                m = e - s
                xa[:m, :dim] = x[s:e] if rows is None else x[rows[s:e]]
                d = dist[:m]
                np.matmul(xa[:m], ca, out=d)
                lab = d.argmin(axis=1)
                labels[s:e] = lab
                part[s:e] = d[idx[:m], lab]

        starts = list(range(0, n, b))
        if self.pool is None or len(starts) < 2:
            run(starts)
        else:
            w = self.workers
            list(self.pool.map(run, [starts[i::w] for i in range(w)]))
        return labels, part


def _update_centroids(x: np.ndarray, labels: np.ndarray, old: np.ndarray, chunk: int) -> np.ndarray:
    """Means of the clusters; an empty cluster keeps its previous centroid. The sums are one
    sparse product per chunk with the (K x n) one-hot matrix, built directly in CSC form (one
    entry per column), which needs no sort; float64 accumulation across chunks."""
    k, d = old.shape
    sums = np.zeros((k, d), dtype=np.float64)
    for s in range(0, len(x), chunk):
        lab = labels[s : s + chunk]
        m = len(lab)
        onehot = sp.csc_matrix(
            (np.ones(m, dtype=np.float32), lab, np.arange(m + 1)), shape=(k, m)
        )
        sums += onehot @ x[s : s + chunk]
    counts = np.bincount(labels, minlength=k)
    new = old.copy()
    nonempty = counts > 0
    new[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
    return new


# Columns per block of the k-means++ candidate product (see _kmeanspp).
_PP_BLOCK = 1024


def _kmeanspp(
    x: np.ndarray, k: int, rng: np.random.Generator, chunk: int, trials: int | None = None
) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii). ``trials`` candidates are drawn per step and
    the one that lowers the potential most is kept; ``None`` means 2 + log k (greedy k-means++,
    as in sklearn and the reference), 1 is the original k-means++. Returns the chosen row
    indices; fewer than ``k`` when the remaining potential reaches 0, i.e. every point coincides
    with a chosen centre."""
    n = len(x)
    trials = 2 + int(np.log(k)) if trials is None else int(trials)
    xsq = np.einsum("ij,ij->i", x, x)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    one_block = n <= chunk
    if one_block:
        # |c|^2 - 2 c.x + |x|^2 as a single product [-2c, |c|^2, 1] . [x, 1, |x|^2]: each
        # step is then one BLAS call plus a minimum, instead of five passes over the result.
        # Stored transposed so the product is a plain row-major GEMM (~20% faster here).
        xa_t = np.empty((x.shape[1] + 2, n), dtype=np.float32)
        xa_t[:-2] = x.T
        xa_t[-2] = 1.0
        xa_t[-1] = xsq
        d = np.empty((trials, n), dtype=np.float32)
    closest = np.maximum(_sqdist_to(x[chosen[:1]], x, xsq, chunk)[0], 0)
    pot = float(closest.sum(dtype=np.float64))
    for c in range(1, k):
        if pot <= 0.0:
            return chosen[:c]
        cum = np.cumsum(closest, dtype=np.float64)
        # side="right" never lands on a zero-weight point (a point already chosen).
        cand = np.searchsorted(cum, rng.random(trials) * cum[-1], side="right")
        np.minimum(cand, n - 1, out=cand)
        if one_block:
            ca = np.empty((trials, x.shape[1] + 2), dtype=np.float32)
            np.multiply(x[cand], -2.0, out=ca[:, :-2])
            ca[:, -2] = xsq[cand]
            ca[:, -1] = 1.0
            # Column blocks: one (trials x n) product ran 1.5-1.7x slower here than the same
            # product in blocks of 1,024 columns (OpenBLAS with a handful of rows).
            for s in range(0, n, _PP_BLOCK):
                np.matmul(ca, xa_t[:, s : s + _PP_BLOCK], out=d[:, s : s + _PP_BLOCK])
            np.minimum(d, closest[None, :], out=d)
            pots = d.sum(axis=1, dtype=np.float64)
            best = int(np.argmin(pots))
            closest = np.maximum(d[best], 0)
        else:
            # Two passes keep memory at trials * chunk: score every candidate, then recompute
            # the winner's distances to update the running minimum.
            centres = x[cand]
            pots = np.zeros(trials, dtype=np.float64)
            for s in range(0, n, chunk):
                d = _sqdist_to(centres, x[s : s + chunk], xsq[s : s + chunk], chunk)
                np.minimum(d, closest[None, s : s + chunk], out=d)
                pots += d.sum(axis=1, dtype=np.float64)
            best = int(np.argmin(pots))
            for s in range(0, n, chunk):
                d = _sqdist_to(centres[best : best + 1], x[s : s + chunk], xsq[s : s + chunk], chunk)
                np.minimum(closest[s : s + chunk], np.maximum(d[0], 0), out=closest[s : s + chunk])
        pot = float(pots[best])
        chosen[c] = cand[best]
    return chosen


def _sqdist_to(c: np.ndarray, x: np.ndarray, xsq: np.ndarray, chunk: int) -> np.ndarray:
    """(len(c), len(x)) squared distances with x in row chunks. The wide layout (few centres by
    many points) is the one BLAS handles fast; x @ c.T with a handful of columns ran ~8x slower
    here. Values can dip just below 0 through rounding; callers clip what they keep."""
    csq = np.einsum("ij,ij->i", c, c)
    out = np.empty((len(c), len(x)), dtype=np.float32)
    for s in range(0, len(x), chunk):
        blk = out[:, s : s + chunk]
        np.matmul(c, x[s : s + chunk].T, out=blk)
        blk *= -2.0
        blk += xsq[None, s : s + chunk]
        blk += csq[:, None]
    return out


def _seed_kmeanspp(
    x: np.ndarray, k: int, rng: np.random.Generator, chunk: int, init_sample: int | None, trials: int | None
) -> np.ndarray:
    """k-means++ seeds, on a uniform subsample of ``init_sample * k`` rows when that is fewer
    than all of them. Should the subsample hold fewer distinct points than ``k`` (heavy
    duplication), seeding falls back to all rows, so the number of clusters found never
    depends on the subsample."""
    n = len(x)
    if init_sample and init_sample * k < n:
        sub = np.sort(rng.choice(n, size=init_sample * k, replace=False))
        seeds = sub[_kmeanspp(x[sub], k, rng, chunk, trials)]
        if len(seeds) == k:
            return seeds
    return _kmeanspp(x, k, rng, chunk, trials)


def _kmeans(
    x: np.ndarray,
    k: int,
    n_iter: int,
    init: str,
    rng: np.random.Generator,
    assign: _Assigner,
    chunk: int,
    init_sample: int | None = None,
    init_trials: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One k-means run on float32 rows ``x``; returns (centroids, labels, squared distances)."""
    k = min(k, len(x))
    if init == "kmeans++":
        seeds = _seed_kmeanspp(x, k, rng, chunk, init_sample, init_trials)
    else:
        seeds = np.sort(rng.choice(len(x), size=k, replace=False))
    centroids = np.array(x[seeds], dtype=np.float32)
    if assign.res is None:
        return _lloyd_incremental(x, centroids, n_iter, assign, chunk)
    xsq = np.einsum("ij,ij->i", x, x)
    labels, sqd = assign(x, centroids, xsq)
    for _ in range(n_iter):
        centroids = _update_centroids(x, labels, centroids, chunk)
        new_labels, sqd = assign(x, centroids, xsq)
        converged = np.array_equal(new_labels, labels)
        labels = new_labels
        if converged:
            break
    return centroids, labels, sqd


def _lloyd_incremental(
    x: np.ndarray, centroids: np.ndarray, n_iter: int, assign: _Assigner, chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lloyd's iterations, searching only what a centroid update can change; same iterates as
    searching every point against every centroid.

    A centroid whose members did not change is recomputed bit for bit (same rows, same order
    of summation), so its distances to every point are unchanged. A point whose own centroid
    did not move was nearest to it among all unmoved centroids before and still is; it can only
    move to a centroid that moved, so it is compared with those alone. Points of moved
    centroids are searched against all. After the first few iterations most clusters keep
    their members (on the benchmark mixture, by iteration 6 more than half of the centroids no
    longer move), so the searches shrink to a fraction of the full product. Ties go to the
    lower index as in a full search. When no centroid moves the assignment is a fixed point and
    the loop ends.
    """
    k = len(centroids)
    labels, part = assign.partial(x, centroids)
    for _ in range(n_iter):
        new = _update_centroids(x, labels, centroids, chunk)
        moved = np.flatnonzero((new != centroids).any(axis=1))
        centroids = new
        if len(moved) == 0:
            break
        is_moved = np.zeros(k, dtype=bool)
        is_moved[moved] = True
        own_moved = is_moved[labels]
        changed = False
        full = np.flatnonzero(own_moved)
        if len(full):
            lab_f, part_f = assign.partial(x, centroids, full)
            changed = bool((lab_f != labels[full]).any())
            labels[full] = lab_f
            part[full] = part_f
        rest = np.flatnonzero(~own_moved)
        if len(rest):
            lab_r, part_r = assign.partial(x, centroids[moved], rest)
            lab_r = moved[lab_r]
            old_part = part[rest]
            better = (part_r < old_part) | ((part_r == old_part) & (lab_r < labels[rest]))
            if better.any():
                changed = True
                take = rest[better]
                labels[take] = lab_r[better]
                part[take] = part_r[better]
        if not changed:
            break
    sqd = part + np.einsum("ij,ij->i", x, x)
    # The expansion can go slightly negative for a point on its centroid.
    np.maximum(sqd, 0, out=sqd)
    return centroids, labels, sqd


def _first_r_per_cluster(labels: np.ndarray, key: np.ndarray, r: int) -> np.ndarray:
    """Sorted indices of the ``r`` rows with the smallest ``key`` in each cluster (ties: lower index)."""
    order = np.lexsort((key, labels))
    sorted_labels = labels[order]
    rank = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return np.sort(order[rank < r])


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def _per_level(value, n_levels: int, key: str, lo: int) -> list[int]:
    vals = [value] * n_levels if isinstance(value, (int, np.integer)) else list(value)
    if len(vals) != n_levels:
        raise fail(key, f"needs one value per level ({n_levels}), got {len(vals)}")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise fail(key, f"values must be integers >= {lo}, got {v!r}")
    return [int(v) for v in vals]


def _centred_float32(x: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    n, d = x.shape
    total = np.zeros(d, dtype=np.float64)
    for s in range(0, n, chunk):
        blk = np.asarray(x[s : s + chunk], dtype=np.float64)
        bad = ~np.isfinite(blk).all(axis=1)
        if bad.any():
            raise fail("x", f"row {s + int(np.argmax(bad))} contains NaN or infinite values")
        total += blk.sum(axis=0)
    mean = total / n
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        out[s : s + chunk] = np.asarray(x[s : s + chunk], dtype=np.float64) - mean
    return out, mean


def fit(
    x: np.ndarray,
    levels: Sequence[int],
    *,
    n_iter: int = 50,
    resample_steps: Sequence[int] | int = 10,
    sample_size: Sequence[int] | None = None,
    sample_strategy: str = "closest",
    init: str = "kmeans++",
    init_sample: int | None = DEFAULT_INIT_SAMPLE,
    init_trials: int | None = None,
    seed: int = 0,
    chunk: int = 65536,
    gpu: bool = False,
    threads: int | None = None,
    progress: bool = False,
) -> Tree:
    """Hierarchical k-means with resampling over the rows of ``x`` (N, D).

    ``levels`` gives K per level, bottom first. ``sample_size`` is r per level, the points taken
    from each cluster in a resampling step; by default ceil(mean cluster size / 2), which gives
    the reference's published settings (15/2 for its toy, 10/3 for its 2-level config). As in
    the reference, a level with r < 2 skips resampling: one point per cluster only snaps each
    centroid onto a data point. ``gpu=True`` runs the assignment on faiss GPU indexes.

    ``init_sample`` (default ``DEFAULT_INIT_SAMPLE`` = 16) makes every k-means++ seeding, in the
    full k-means and in each resampling step, run on a uniform random subsample of
    ``init_sample * K`` rows instead of all of them (the seeds are data rows; Lloyd then runs on
    all rows), the way faiss trains on at most 256 points per centroid. ``None`` seeds on all
    rows, as the reference does. Seeding cost is linear in the rows, and it was 45% of a fit
    on the benchmark mixture; with 16 per cluster the draws were as balanced as with all rows
    (bench/README-hkm.md). If the subsample holds fewer distinct points than K, seeding falls
    back to all rows. ``init_trials`` is the number of candidates per k-means++ step: ``None``
    is the greedy 2 + log K of the reference and sklearn, 1 the original k-means++ (cheaper,
    and markedly less balanced on the benchmark: KL 0.11 against 0.03).

    ``threads`` caps faiss's OpenMP pool and the BLAS pools for the duration of the call
    (``None`` leaves them as they are). On an oversubscribed machine the spinning worker
    threads of those pools cost far more than they bring: on the shared 2-core box this was
    written on, one faiss search ran 13x slower with 2 threads than with 1. With a BLAS cap of
    T >= 2 (set here or by the caller), the CPU assignment uses T Python threads over its row
    blocks with single-threaded BLAS (see ``_fit``); the result does not depend on T.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise fail("x", f"expected a 2-D array (points x dims), got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise fail("x", f"needs at least one point and one dimension, got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise fail("x", f"expected numbers, got dtype {x.dtype}")
    levels = _per_level(list(levels), len(levels), "levels", 1)
    if not levels:
        raise fail("levels", "needs at least one level")
    n_levels = len(levels)
    steps = _per_level(resample_steps, n_levels, "resample_steps", 0)
    sizes_r = None if sample_size is None else _per_level(sample_size, n_levels, "sample_size", 1)
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise fail("n_iter", f"must be an integer >= 0, got {n_iter!r}")
    if sample_strategy not in SAMPLE_STRATEGIES:
        raise fail("sample_strategy", f"unknown {sample_strategy!r}; allowed: {', '.join(SAMPLE_STRATEGIES)}")
    if init not in INITS:
        raise fail("init", f"unknown {init!r}; allowed: {', '.join(INITS)}")
    for key, v in (("init_sample", init_sample), ("init_trials", init_trials)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise fail(key, f"must be an integer >= 1 or None, got {v!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise fail("chunk", f"must be an integer >= 1, got {chunk!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1):
        raise fail("threads", f"must be an integer >= 1 or None, got {threads!r}")
    if threads is None:
        return _fit(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed, chunk,
                    gpu, progress)
    with threadpool_limits(limits=int(threads)):
        return _fit(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed, chunk,
                    gpu, progress)


def _blas_threads() -> int:
    """The BLAS thread count in force (the cap set by ``threads`` or by the caller)."""
    counts = [int(i.get("num_threads") or 1) for i in ThreadpoolController().select(user_api="blas").info()]
    return max(counts, default=1)


def _fit(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed, chunk, gpu,
         progress) -> Tree:
    """With T >= 2 BLAS threads allowed, the CPU assignment runs its row blocks on T Python
    threads with single-threaded BLAS, instead of splitting each small product T ways: every
    product here is small (2,048 x 65 x K, or a few rows for k-means++), so the per-call
    hand-off of a threaded BLAS cost more than it brought, and the argmins run in parallel
    too. The results do not depend on the thread count (each row's numbers are the same)."""
    workers = 1 if gpu else _blas_threads()
    if workers < 2:
        return _fit_body(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed,
                         chunk, gpu, progress, None, 1)
    with ThreadPoolExecutor(workers) as pool, threadpool_limits(limits=1, user_api="blas"):
        return _fit_body(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed,
                         chunk, gpu, progress, pool, workers)


def _fit_body(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed, chunk, gpu,
              progress, pool, workers) -> Tree:
    rng = np.random.default_rng(seed)
    xc, mean = _centred_float32(x, chunk)
    assign = _Assigner(xc.shape[1], chunk, gpu, pool, workers)

    assignments: list[np.ndarray] = []
    centroids_out: list[np.ndarray] = []
    point_sqdist = None
    pts = xc
    bar = tqdm(total=sum(1 + s for s in steps), desc="hkmeans", unit="kmeans", disable=not progress)
    for t, k_req in enumerate(levels):
        n_t = len(pts)
        k = min(k_req, n_t)
        r = sizes_r[t] if sizes_r is not None else -(-n_t // (2 * k))
        bar.set_postfix(level=t + 1, k=k)
        cent, lab, sqd = _kmeans(pts, k, n_iter, init, rng, assign, chunk, init_sample, init_trials)
        bar.update(1)
        for _ in range(steps[t]):
            if r < 2:
                bar.update(1)
                continue
            key = sqd if sample_strategy == "closest" else rng.random(n_t)
            picked = _first_r_per_cluster(lab, key, r)
            cent, lab_s, sqd_s = _kmeans(pts[picked], k, n_iter, init, rng, assign, chunk, init_sample, init_trials)
            # The sampled rows already have their labels for the final centroids (Lloyd ends
            # on an assignment); search only the others.
            rest = np.ones(n_t, dtype=bool)
            rest[picked] = False
            rest = np.flatnonzero(rest)
            lab = np.empty(n_t, dtype=np.int64)
            sqd = np.empty(n_t, dtype=np.float32)
            lab[picked], sqd[picked] = lab_s, sqd_s
            lab[rest], sqd[rest] = assign(pts[rest], cent)
            bar.update(1)
        used = np.flatnonzero(np.bincount(lab, minlength=len(cent)))
        if len(used) < k_req:
            warnings.warn(
                f"level {t + 1}: {k_req} clusters requested, {len(used)} non-empty clusters kept "
                f"({n_t} points{'' if n_t >= k_req else ', fewer than clusters'}; duplicates or "
                f"too few points leave clusters empty)",
                ClusterCountWarning,
                stacklevel=3,
            )
        remap = np.full(len(cent), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        cent = np.ascontiguousarray(cent[used])
        assignments.append(remap[lab])
        centroids_out.append((cent.astype(np.float64) + mean).astype(np.float32))
        if t == 0:
            point_sqdist = sqd.astype(np.float32)
        pts = cent
    bar.close()
    return Tree(assignments, centroids_out, point_sqdist, list(levels))


# --------------------------------------------------------------------------------------------
# balanced sampling
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _int_list(key: str, text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise fail(key, f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise fail(key, f"expected comma-separated integers, got {text!r}")
    return vals


def _size_stats(s: np.ndarray) -> dict:
    return {"min": int(s.min()), "median": float(np.median(s)), "mean": float(s.mean()), "max": int(s.max())}


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m selectbench.hkmeans",
        description="Hierarchical k-means curation: cluster embeddings, draw a concept-balanced subset.",
    )
    ap.add_argument("emb", help="embeddings, a 2-D .npy array (points x dims)")
    ap.add_argument("--n", type=int, required=True, help="number of points to select")
    ap.add_argument("--levels", required=True, help="clusters per level, bottom first, e.g. 100,10")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-iter", type=int, default=50, help="Lloyd iterations per k-means")
    ap.add_argument("--resample-steps", default="10", help="one value or one per level")
    ap.add_argument("--sample-size", default=None, help="r per level (default: ceil(mean cluster size / 2))")
    ap.add_argument("--strategy", choices=SAMPLE_STRATEGIES, default="closest", help="resampling pick")
    ap.add_argument("--init", choices=INITS, default="kmeans++")
    ap.add_argument("--init-sample", type=int, default=DEFAULT_INIT_SAMPLE,
                    help="k-means++ seeds on a random sample of this many points per cluster; 0: all points "
                         f"(default {DEFAULT_INIT_SAMPLE})")
    ap.add_argument("--init-trials", type=int, default=None,
                    help="candidates per k-means++ step (default 2 + ln K, greedy; 1: plain k-means++)")
    ap.add_argument("--leaf", choices=LEAF_STRATEGIES, default="random", help="pick inside a leaf cluster")
    ap.add_argument("--multiplier", type=int, default=1, help="max times a point may be selected")
    ap.add_argument("--chunk", type=int, default=65536, help="rows per assignment batch (memory bound)")
    ap.add_argument("--gpu", action="store_true", help="faiss GPU assignment")
    ap.add_argument("--threads", type=int, default=None,
                    help="cap faiss/BLAS threads (1 is fastest on an oversubscribed machine)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    if args.n <= 0:
        raise fail("--n", f"must be > 0, got {args.n}")
    levels = _int_list("--levels", args.levels)
    if any(k < 1 for k in levels):
        raise fail("--levels", f"cluster counts must be >= 1, got {args.levels}")
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise fail("--levels", f"must be strictly decreasing (bottom level first), got {args.levels}")
    steps = _int_list("--resample-steps", args.resample_steps)
    steps = steps[0] if len(steps) == 1 else steps
    sample_size = None if args.sample_size is None else _int_list("--sample-size", args.sample_size)

    emb = Path(args.emb)
    if not emb.is_file():
        raise fail("emb", f"file not found: {emb}")
    try:
        x = np.load(emb, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise fail("emb", f"{emb} is not a readable .npy array ({e})") from None
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise fail("emb", f"{emb}: expected a 2-D array (points x dims), got shape {getattr(x, 'shape', None)}")

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ClusterCountWarning)
        tree = fit(
            x,
            levels,
            n_iter=args.n_iter,
            resample_steps=steps,
            sample_size=sample_size,
            sample_strategy=args.strategy,
            init=args.init,
            init_sample=None if args.init_sample == 0 else args.init_sample,
            init_trials=args.init_trials,
            seed=args.seed,
            chunk=args.chunk,
            gpu=args.gpu,
            threads=args.threads,
            progress=not args.no_progress,
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    idx = balanced_sample(tree, args.n, leaf=args.leaf, multiplier=args.multiplier, seed=args.seed)
    t_sample = time.perf_counter() - t1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out / "indices.npy", idx)
    tree.save(out / "tree.npz")
    sizes = tree.sizes()
    sel = np.bincount(tree.labels(tree.n_levels)[idx], minlength=tree.n_clusters[-1]) if len(idx) else None
    write_json(
        out / "summary.json",
        {
            "embeddings": str(emb),
            "n_points": tree.n_points,
            "dim": int(x.shape[1]),
            "n_requested": args.n,
            "n_selected": int(len(idx)),
            "levels_requested": levels,
            "clusters_per_level": tree.n_clusters,
            "cluster_size_stats": [_size_stats(s) for s in sizes],
            "cluster_sizes": [s.tolist() for s in sizes],
            "selected_per_top_cluster": None if sel is None else sel.tolist(),
            "params": {
                "seed": args.seed,
                "n_iter": args.n_iter,
                "resample_steps": steps,
                "sample_size": sample_size,
                "strategy": args.strategy,
                "init": args.init,
                "init_sample": args.init_sample,
                "init_trials": args.init_trials,
                "leaf": args.leaf,
                "multiplier": args.multiplier,
                "threads": args.threads,
            },
            "seconds": {"fit": round(t_fit, 3), "sample": round(t_sample, 3)},
        },
    )
    print(f"selected {len(idx)} of {tree.n_points} points; clusters per level {tree.n_clusters}; "
          f"fit {t_fit:.2f}s -> {out}")
    return 0


if __name__ == "__main__":
    main()
