"""The cluster tree of hierarchical k-means: levels of centroids and assignments, saved as .npz."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from selectbench.core.errors import UserError, fail
from selectbench.core.io import atomic_path, read_npz
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
        # A file object stops np.savez from appending ".npz" to the temporary name.
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tree":
        data = read_npz(path, "tree file")
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
