"""The ranks a stage splits its work over, and the few collectives it needs (torch.distributed).

Work is split in whole units so that results do not depend on the world size: inference or
generation batches and shards (unit u on rank u % world, `mine`), or contiguous blocks of rows
(`shard_range`, hierarchical k-means). Whatever is decided from the units' results is replicated
on every rank or made on rank 0 alone. ``Local`` is one process: every collective is the
identity, and the code runs exactly as it did before it was split. ``Dist`` is torch.distributed
(gloo on CPU, NCCL on GPU), already initialised by selectbench.core.runtime.init_distributed."""
from __future__ import annotations

from typing import Any

import numpy as np


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank ``rank``: contiguous blocks whose sizes differ by at most one."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class Local:
    """One process holding every row and every unit."""

    rank, world = 0, 1

    def mine(self, units: int) -> range:
        """The units (of 0..units-1) this rank computes."""
        return range(self.rank, units, self.world)

    def barrier(self) -> None:
        pass

    def sum(self, a: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks, on every rank."""
        return a

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def gather(self, obj) -> list:
        """Every rank's object, in rank order, on every rank."""
        return [obj]

    def merge(self, part: dict[int, Any]) -> dict[int, Any] | None:
        """Every rank's {unit: result} merged, on rank 0; None on the others."""
        return part

    def offset(self, n_local: int) -> tuple[int, int]:
        """(index of this rank's first row, total rows) for blocks of rows split in rank order."""
        return 0, n_local

    def rows(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (global indices) of an array split in blocks, on every rank."""
        return np.asarray(x[idx], dtype=np.float32)

    def cat(self, a: np.ndarray) -> np.ndarray:
        """This rank's block of a per-row array joined with the others', in row order."""
        return a


LOCAL = Local()


class Dist(Local):
    def __init__(self):
        import torch
        import torch.distributed as dist

        self._torch, self._dist = torch, dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None

    def barrier(self) -> None:
        self._dist.barrier()

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

    def merge(self, part: dict[int, Any]) -> dict[int, Any] | None:
        parts = [None] * self.world if self.rank == 0 else None
        self._dist.gather_object(part, parts, dst=0)
        return {u: r for p in parts for u, r in p.items()} if self.rank == 0 else None

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


def map_batches(fn, n: int, batch: int, comm: Local = LOCAL, desc: str | None = None) -> list | None:
    """fn(start, end) for the batches [start, end) of n items, batch b computed on rank b % world:
    the results in item order on rank 0 (each batch holds the same items whatever the world
    size), None on the others. A collective: every rank calls it. `desc`: rank 0's progress bar."""
    from tqdm.auto import tqdm

    starts = range(0, n, batch)
    mine = tqdm(comm.mine(len(starts)), desc=desc, unit="batch", disable=desc is None or comm.rank != 0)
    got = comm.merge({b: fn(starts[b], min(n, starts[b] + batch)) for b in mine})
    return None if got is None else [got[b] for b in range(len(starts))]


def map_rows(fn, n: int, batch: int, comm: Local = LOCAL, desc: str | None = None, width: int = 0) -> np.ndarray | None:
    """map_batches for an fn that returns a row array per batch: the rows joined in item order on
    rank 0 (float32 [0, width] when n is 0), None on the others."""
    out = map_batches(fn, n, batch, comm, desc)
    if out is None:
        return None
    return np.concatenate(out) if out else np.empty((0, width), dtype=np.float32)
