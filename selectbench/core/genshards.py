"""Generated images as WebDataset shards: written batch by batch by any number of ranks, read by row.

Shard s holds items [s * per_shard, (s + 1) * per_shard) as lossless PNG members `<item>.png`;
rank r makes the shards s with s % world == r, each in whole generation batches, and item i's
noise depends on (seed, i) alone, so the bytes do not depend on the world size. A shard appears
under its name only once complete (written to a temporary name, then renamed), which is what a
rerun resumes from; `manifest.json` holds the digest of the request (weights, prompts, seed...)
and a store made for another request is cleared. Writing holds one batch in memory, reading one
decoded shard, whatever n is.
`sizes.json` (open_clip's name) is written last by rank 0: a store without it is unfinished."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from selectbench.core.comm import LOCAL, Local
from selectbench.core.errors import UserError, fail
from selectbench.core.io import read_json, write_json
from selectbench.core.shards import add_member, png_bytes, tar_members

PATTERN = "gen-{:06d}.tar"
# Images per shard when the caller names no size (rounded down to whole batches): open_clip's size.
TARGET_PER_SHARD = 1000


def per_shard(batch_size: int, target: int = TARGET_PER_SHARD) -> int:
    """Images per shard: whole batches, about `target` of them (at least one batch)."""
    return batch_size * max(1, target // batch_size)


def _digest(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def write(n: int, batch_size: int, make: Callable[[int, int], np.ndarray], out_dir: str | os.PathLike, *,
          fingerprint: dict, comm: Local = LOCAL, shard_size: int | None = None,
          progress: bool = False, desc: str = "generate") -> "GeneratedImages":
    """make(start, end) -> uint8 images [end - start, H, W(, 3)] for items [start, end); writes this
    rank's shards of the n items into out_dir (finished ones kept) and returns the store's view
    once every rank of `comm` is done."""
    rank, world = comm.rank, comm.world
    from tqdm.auto import tqdm

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise fail("batch_size", f"must be an int >= 1, got {batch_size!r}")
    out = Path(out_dir)
    size = shard_size or per_shard(batch_size)
    if size % batch_size:
        raise fail("shard_size", f"must be whole batches of {batch_size}, got {size}")
    digest = _digest({**fingerprint, "n": n, "batch_size": batch_size, "shard_size": size})
    if rank == 0:
        manifest = out / "manifest.json"
        if out.exists() and (not manifest.exists() or read_json(manifest).get("digest") != digest):
            shutil.rmtree(out)  # made for another request: nothing in it may be reused
        out.mkdir(parents=True, exist_ok=True)
        write_json(manifest, {"digest": digest, "n": n, "batch_size": batch_size, "shard_size": size})
    comm.barrier()
    n_shards = -(-n // size)
    done = [s for s in range(n_shards) if (out / PATTERN.format(s)).exists()]
    if done and rank == 0:
        print(f"{desc}: resuming, {len(done)} of {n_shards} shards already written", flush=True)
    mine = comm.mine(n_shards)
    todo = [s for s in mine if not (out / PATTERN.format(s)).exists()]
    count = {s: min(size, n - s * size) for s in mine}
    with tqdm(total=sum(count.values()), initial=sum(count.values()) - sum(count[s] for s in todo),
              desc=f"{desc} (rank {rank})" if world > 1 else desc, unit="img", disable=not progress) as bar:
        for s in todo:
            start, end = s * size, min(n, (s + 1) * size)
            tmp = out / f".{PATTERN.format(s)}.{rank}.tmp"
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for b in range(start, end, batch_size):
                    imgs = np.asarray(make(b, min(end, b + batch_size)))
                    if imgs.dtype != np.uint8 or len(imgs) != min(end, b + batch_size) - b:
                        raise ValueError(f"generation batch [{b}, {min(end, b + batch_size)}) returned "
                                         f"{imgs.dtype} {imgs.shape}")
                    for i, img in enumerate(imgs, start=b):
                        add_member(tar, f"{i:08d}.png", png_bytes(img))
                    bar.update(len(imgs))
            os.replace(tmp, out / PATTERN.format(s))
            _fault_point(rank)
    comm.barrier()
    if rank == 0:
        sizes = {PATTERN.format(s): min(size, n - s * size) for s in range(n_shards)}
        write_json(out / "sizes.json", sizes)
    comm.barrier()
    return GeneratedImages(out)


def _fault_point(rank: int) -> None:
    """Tests kill a rank after its first finished shard (SELECT_FAULT_KILL_RANK); never set otherwise."""
    if os.environ.get("SELECT_FAULT_KILL_RANK") == str(rank):
        os.kill(os.getpid(), 9)


class GeneratedImages:
    """Read-only view of a finished store: len, [i], [a:b], [int or bool array] -> uint8 images;
    `take`/`failed` as the full profile's lazy views (a PNG written here always decodes)."""

    failed: dict = {}

    def __init__(self, store: str | os.PathLike):
        self.dir = Path(store)
        sizes_file = self.dir / "sizes.json"
        if not sizes_file.exists():
            raise UserError(f"{self.dir}: generated images are unfinished (no sizes.json); rerun the curate stage")
        sizes = read_json(sizes_file)
        self.names = sorted(sizes)
        self.counts = np.array([sizes[k] for k in self.names], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _shard(self, s: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != s:
            imgs = [np.asarray(Image.open(io.BytesIO(data))) for _, data in tar_members(str(self.dir / self.names[s]))]
            if len(imgs) != self.counts[s]:
                raise UserError(f"{self.dir / self.names[s]}: {len(imgs)} images, sizes.json says {self.counts[s]}")
            self._cached = (s, np.stack(imgs))
        return self._cached[1]

    def take(self, rows) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64)
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} generated images")
        rows = np.where(rows < 0, rows + len(self), rows)
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        out = None
        for s in np.unique(shard):  # shard by shard: one decoded shard in memory at a time
            sel = np.flatnonzero(shard == s)
            imgs = self._shard(int(s))
            if out is None:
                out = np.empty((len(rows), *imgs.shape[1:]), dtype=np.uint8)
            out[sel] = imgs[rows[sel] - self.starts[s]]
        if out is None:
            out = np.empty((0, *self._shard(0).shape[1:]) if len(self) else (0,), dtype=np.uint8)
        return out, np.ones(len(rows), dtype=bool)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.take([key])[0][0]
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])[0]
        return self.take(key)[0]

    def __array__(self, dtype=None, copy=None):
        arr = self.take(np.arange(len(self)))[0]
        return arr if dtype is None else arr.astype(dtype)
