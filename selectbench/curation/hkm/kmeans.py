"""Flat k-means pieces of the hierarchy: blocked faiss assignment, centroid updates, k-means++
seeding on a subsample, and Lloyd's iterations."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from selectbench.core.comm import LOCAL, Local
from selectbench.core.errors import fail

INITS = ("kmeans++", "random")
# Points per cluster in the uniform subsample that k-means++ seeding runs on (fit(init_sample=)).
DEFAULT_INIT_SAMPLE = 16


def _group_sum(values: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    # bincount with weights sums in float64, exact for integer counts far beyond any data size.
    return np.rint(np.bincount(groups, weights=values, minlength=k)).astype(np.int64)


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


def _update_centroids(
    x: np.ndarray, labels: np.ndarray, old: np.ndarray, chunk: int, comm: Local = LOCAL
) -> np.ndarray:
    """Means of the clusters; an empty cluster keeps its previous centroid. The sums are one
    sparse product per chunk with the (K x n) one-hot matrix, built directly in CSC form (one
    entry per column), which needs no sort; float64 accumulation across chunks, then across
    ranks (an all-reduce of sums and counts)."""
    k, d = old.shape
    sums = np.zeros((k, d), dtype=np.float64)
    for s in range(0, len(x), chunk):
        lab = labels[s : s + chunk]
        m = len(lab)
        onehot = sp.csc_matrix(
            (np.ones(m, dtype=np.float32), lab, np.arange(m + 1)), shape=(k, m)
        )
        sums += onehot @ x[s : s + chunk]
    sums = comm.sum(sums)
    counts = comm.sum(np.bincount(labels, minlength=k))
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
    x: np.ndarray, k: int, rng: np.random.Generator, chunk: int, init_sample: int | None, trials: int | None,
    comm: Local = LOCAL,
) -> np.ndarray:
    """k-means++ seeds (global row indices), on a uniform subsample of ``init_sample * k`` rows
    when that is fewer than all of them; split rows are gathered first, so every rank seeds the
    same. Should the subsample hold fewer distinct points than ``k`` (heavy duplication),
    seeding falls back to all rows, so the number of clusters found never depends on the
    subsample."""
    n = comm.offset(len(x))[1]
    if init_sample and init_sample * k < n:
        sub = np.sort(rng.choice(n, size=init_sample * k, replace=False))
        seeds = sub[_kmeanspp(comm.rows(x, sub), k, rng, chunk, trials)]
        if len(seeds) == k:
            return seeds
    return _kmeanspp(x if comm.world == 1 else comm.rows(x, np.arange(n)), k, rng, chunk, trials)


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
    comm: Local = LOCAL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One k-means run on float32 rows ``x`` (this rank's block); returns (centroids, labels,
    squared distances), the labels and distances of this rank's rows."""
    n = comm.offset(len(x))[1]
    k = min(k, n)
    if init == "kmeans++":
        seeds = _seed_kmeanspp(x, k, rng, chunk, init_sample, init_trials, comm)
    else:
        seeds = np.sort(rng.choice(n, size=k, replace=False))
    centroids = comm.rows(x, seeds)
    if assign.res is None:
        return _lloyd_incremental(x, centroids, n_iter, assign, chunk, comm)
    xsq = np.einsum("ij,ij->i", x, x)
    labels, sqd = assign(x, centroids, xsq)
    for _ in range(n_iter):
        centroids = _update_centroids(x, labels, centroids, chunk, comm)
        new_labels, sqd = assign(x, centroids, xsq)
        converged = not comm.any(not np.array_equal(new_labels, labels))
        labels = new_labels
        if converged:
            break
    return centroids, labels, sqd


def _centred_float32(x: np.ndarray, chunk: int, comm: Local = LOCAL) -> tuple[np.ndarray, np.ndarray]:
    n, d = x.shape
    lo, n_all = comm.offset(n)
    total = np.zeros(d, dtype=np.float64)
    for s in range(0, n, chunk):
        blk = np.asarray(x[s : s + chunk], dtype=np.float64)
        bad = ~np.isfinite(blk).all(axis=1)
        if bad.any():
            raise fail("x", f"row {lo + s + int(np.argmax(bad))} contains NaN or infinite values")
        total += blk.sum(axis=0)
    mean = comm.sum(total) / n_all
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        out[s : s + chunk] = np.asarray(x[s : s + chunk], dtype=np.float64) - mean
    return out, mean


def _blas_threads() -> int:
    """The BLAS thread count in force (the cap set by ``threads`` or by the caller)."""
    counts = [int(i.get("num_threads") or 1) for i in ThreadpoolController().select(user_api="blas").info()]
    return max(counts, default=1)


def _lloyd_incremental(
    x: np.ndarray, centroids: np.ndarray, n_iter: int, assign: _Assigner, chunk: int, comm: Local = LOCAL
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
        new = _update_centroids(x, labels, centroids, chunk, comm)
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
        if not comm.any(changed):
            break
    sqd = part + np.einsum("ij,ij->i", x, x)
    # The expansion can go slightly negative for a point on its centroid.
    np.maximum(sqd, 0, out=sqd)
    return centroids, labels, sqd
