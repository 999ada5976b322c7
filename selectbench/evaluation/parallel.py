"""Data-parallel evaluation under torch.distributed whose outputs do not depend on the world size.

Work is split in whole units: inference batches (unit b on rank b % world, each batch holding the
same items whatever the world size, since a conv net's float results on CPU can depend on the
batch's composition) and transfer tasks (task i on rank i % world). Rank 0 gathers every unit's
result and assembles them in item / task order. One process is the world-1 case of the same code."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from selectbench.models.training import predict

BATCH = 1024  # predict's batch: a unit of work, so the same for any world size


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    def mine(self, units: int) -> range:
        """The units (of 0..units-1) this rank computes."""
        return range(self.rank, units, self.world)

    def gather(self, part: dict[int, Any]) -> dict[int, Any] | None:
        """Every rank's {unit: result} merged, on rank 0; None on the others. A collective: every
        rank calls it, in the same order (gather_object: gloo on CPU, NCCL through the current GPU)."""
        if self.world == 1:
            return part
        import torch.distributed as dist

        parts = [None] * self.world if self.rank == 0 else None
        dist.gather_object(part, parts, dst=0)
        if self.rank != 0:
            return None
        return {u: r for p in parts for u, r in p.items()}


def predict_batches(model, images, cfg: dict, ranks: Ranks = Ranks(), batch: int = BATCH) -> np.ndarray | None:
    """predict(model, images, cfg) with batch b computed on rank b % world: the logits in item order
    on rank 0 (the same bytes as one process gets), None on the others."""
    starts = range(0, len(images), batch)
    part = {b: predict(model, images[starts[b]:starts[b] + batch], cfg, batch) for b in ranks.mine(len(starts))}
    got = ranks.gather(part)
    if got is None:
        return None
    out = [got[b] for b in range(len(starts))]
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)
