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

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selectbench.core.errors import UserError, fail
from selectbench.curation.hkm.kmeans import _group_sum

TREE_FORMAT = 1


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
