"""The collectives hierarchical k-means needs when its points are split across ranks.

Each rank holds a contiguous block of the rows (``shard_range``); the centroids, the random
generator and every decision are replicated, so all ranks walk the same path. ``Local`` is one
process: every collective is the identity and the code runs exactly as before it was split.
``Dist`` is torch.distributed (gloo on CPU, NCCL on GPU), the reference implementation's engine:
per-centroid sums and counts are all-reduced, seeding rows are gathered."""
from __future__ import annotations

import numpy as np


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank ``rank``: contiguous blocks whose sizes differ by at most one."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class Local:
    """One process holding every row."""

    rank, world = 0, 1

    def sum(self, a: np.ndarray) -> np.ndarray:
        return a

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def offset(self, n_local: int) -> tuple[int, int]:
        """(index of this rank's first row, total rows)."""
        return 0, n_local

    def rows(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (global, sorted or not) of the split array, on every rank."""
        return np.asarray(x[idx], dtype=np.float32)

    def cat(self, a: np.ndarray) -> np.ndarray:
        """This rank's block of a per-row array joined with the others', in row order."""
        return a

    def gather(self, obj) -> list:
        return [obj]


LOCAL = Local()


class Dist(Local):
    """torch.distributed, already initialised (selectbench.core.runtime.init_distributed)."""

    def __init__(self):
        import torch
        import torch.distributed as dist

        self._torch, self._dist = torch, dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None

    def sum(self, a: np.ndarray) -> np.ndarray:
        t = self._torch.from_numpy(np.ascontiguousarray(a))
        if self._device is not None:
            t = t.to(self._device)
        self._dist.all_reduce(t)
        return t.cpu().numpy()

    def any(self, flag: bool) -> bool:
        return bool(self.sum(np.array([int(bool(flag))], dtype=np.int64))[0])

    def gather(self, obj) -> list:
        out = [None] * self.world
        self._dist.all_gather_object(out, obj)
        return out

    def offset(self, n_local: int) -> tuple[int, int]:
        counts = self.gather(int(n_local))
        return int(sum(counts[: self.rank])), int(sum(counts))

    def rows(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        # Each row lives on one rank and is zero elsewhere, so the sum is that row exactly.
        lo, _ = self.offset(len(x))
        idx = np.asarray(idx, dtype=np.int64)
        out = np.zeros((len(idx), x.shape[1]), dtype=np.float32)
        own = (idx >= lo) & (idx < lo + len(x))
        out[own] = x[idx[own] - lo]
        return self.sum(out)

    def cat(self, a: np.ndarray) -> np.ndarray:
        return np.concatenate(self.gather(np.asarray(a)))
