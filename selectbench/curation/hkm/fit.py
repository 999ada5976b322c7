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
* Empty clusters during Lloyd keep their previous centroid (the reference's rule)."""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from selectbench.core.comm import LOCAL, Local
from selectbench.core.errors import fail
from selectbench.curation.hkm.kmeans import (
    DEFAULT_INIT_SAMPLE,
    INITS,
    _Assigner,
    _blas_threads,
    _centred_float32,
    _kmeans,
)
from selectbench.curation.hkm.sample import SAMPLE_STRATEGIES
from selectbench.curation.hkm.tree import Tree


class ClusterCountWarning(UserWarning):
    """A level ends up with fewer clusters than requested (too few or duplicate points)."""


def _first_r_per_cluster(labels: np.ndarray, key: np.ndarray, r: int) -> np.ndarray:
    """Sorted indices of the ``r`` rows with the smallest ``key`` in each cluster (ties: lower index)."""
    order = np.lexsort((key, labels))
    sorted_labels = labels[order]
    rank = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return np.sort(order[rank < r])


def _first_r_split(labels: np.ndarray, key: np.ndarray, r: int, comm: Local) -> np.ndarray:
    """``_first_r_per_cluster`` over rows split across ranks, as this rank's local indices: the
    global first r of a cluster are among some rank's local first r, so only those candidates
    are gathered. Joined in rank order they are in global row order, so ties break the same."""
    mine = _first_r_per_cluster(labels, key, r)
    if comm.world == 1:
        return mine
    lo, _ = comm.offset(len(labels))
    parts = comm.gather((labels[mine], key[mine], mine + lo))
    lab_c, key_c, row_c = (np.concatenate(a) for a in zip(*parts))
    chosen = row_c[_first_r_per_cluster(lab_c, key_c, r)]
    return chosen[(chosen >= lo) & (chosen < lo + len(labels))] - lo


def _per_level(value, n_levels: int, key: str, lo: int) -> list[int]:
    vals = [value] * n_levels if isinstance(value, (int, np.integer)) else list(value)
    if len(vals) != n_levels:
        raise fail(key, f"needs one value per level ({n_levels}), got {len(vals)}")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise fail(key, f"values must be integers >= {lo}, got {v!r}")
    return [int(v) for v in vals]


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
    comm: Local = LOCAL,
) -> Tree:
    """Hierarchical k-means with resampling over the rows of ``x`` (N, D).

    With ``comm`` a ``comm.Dist``, ``x`` is this rank's block of the rows (``comm.shard_range``):
    level 1's assignments and centroid updates run split, with sums and counts all-reduced;
    seeding rows are gathered; the upper levels cluster the (replicated) level-1 centroids on
    every rank. Every rank returns the whole tree, the one a single process fits on all rows.

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
    if comm.offset(x.shape[0])[1] < 1 or x.shape[1] < 1:
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
    args = (x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed, chunk, gpu,
            progress and comm.rank == 0, comm)
    if threads is None:
        return _fit(*args)
    with threadpool_limits(limits=int(threads)):
        return _fit(*args)


def _fit(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed, chunk, gpu,
         progress, comm) -> Tree:
    """With T >= 2 BLAS threads allowed, the CPU assignment runs its row blocks on T Python
    threads with single-threaded BLAS, instead of splitting each small product T ways: every
    product here is small (2,048 x 65 x K, or a few rows for k-means++), so the per-call
    hand-off of a threaded BLAS cost more than it brought, and the argmins run in parallel
    too. The results do not depend on the thread count (each row's numbers are the same)."""
    workers = 1 if gpu else _blas_threads()
    if workers < 2:
        return _fit_body(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed,
                         chunk, gpu, progress, None, 1, comm)
    with ThreadPoolExecutor(workers) as pool, threadpool_limits(limits=1, user_api="blas"):
        return _fit_body(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed,
                         chunk, gpu, progress, pool, workers, comm)


def _fit_body(x, levels, n_iter, steps, sizes_r, sample_strategy, init, init_sample, init_trials, seed, chunk, gpu,
              progress, pool, workers, comm) -> Tree:
    rng = np.random.default_rng(seed)
    xc, mean = _centred_float32(x, chunk, comm)
    assign = _Assigner(xc.shape[1], chunk, gpu, pool, workers)
    split = comm  # level 1 runs on the split rows; higher levels on replicated centroids

    assignments: list[np.ndarray] = []
    centroids_out: list[np.ndarray] = []
    point_sqdist = None
    pts = xc
    bar = tqdm(total=sum(1 + s for s in steps), desc="hkmeans", unit="kmeans", disable=not progress)
    for t, k_req in enumerate(levels):
        lo, n_t = split.offset(len(pts))
        k = min(k_req, n_t)
        r = sizes_r[t] if sizes_r is not None else -(-n_t // (2 * k))
        bar.set_postfix(level=t + 1, k=k)
        cent, lab, sqd = _kmeans(pts, k, n_iter, init, rng, assign, chunk, init_sample, init_trials, split)
        bar.update(1)
        for _ in range(steps[t]):
            if r < 2:
                bar.update(1)
                continue
            key = sqd if sample_strategy == "closest" else rng.random(n_t)[lo : lo + len(pts)]
            picked = _first_r_split(lab, key, r, split)
            cent, lab_s, sqd_s = _kmeans(pts[picked], k, n_iter, init, rng, assign, chunk, init_sample, init_trials,
                                         split)
            # The sampled rows already have their labels for the final centroids (Lloyd ends
            # on an assignment); search only the others.
            rest = np.ones(len(pts), dtype=bool)
            rest[picked] = False
            rest = np.flatnonzero(rest)
            lab = np.empty(len(pts), dtype=np.int64)
            sqd = np.empty(len(pts), dtype=np.float32)
            lab[picked], sqd[picked] = lab_s, sqd_s
            lab[rest], sqd[rest] = assign(pts[rest], cent)
            bar.update(1)
        used = np.flatnonzero(split.sum(np.bincount(lab, minlength=len(cent))))
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
        assignments.append(split.cat(remap[lab]))
        centroids_out.append((cent.astype(np.float64) + mean).astype(np.float32))
        if t == 0:
            point_sqdist = split.cat(sqd.astype(np.float32))
        pts = cent
        split = LOCAL
    bar.close()
    return Tree(assignments, centroids_out, point_sqdist, list(levels))
