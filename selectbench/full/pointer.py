"""Decoding behind a pointer file: a lazy array-like over one or several adapters (full profile)."""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from selectbench.core.errors import UserError
from selectbench.full.decode import PathSource, to_array
from selectbench.full.laion import LaionSource

CHUNK = 64  # images per decoding task: big enough to amortise the thread hand-off


class LazyImages:
    """Images decoded on demand from one or several adapters ("parts"). Row i is image
    origin_row[i] of part origin[i]."""

    def __init__(self, parts: dict, origin: np.ndarray, origin_row: np.ndarray, size: int, mode: str,
                 workers: int = 1):
        if mode not in ("L", "RGB"):
            raise UserError(f"image mode must be 'L' or 'RGB', got {mode!r}")
        self.parts, self.size, self.mode, self.workers = parts, int(size), mode, max(1, int(workers))
        self.origin = np.asarray(origin, dtype=object)
        self.origin_row = np.asarray(origin_row, dtype=np.int64)
        unknown = sorted(set(self.origin) - set(parts))
        if unknown:
            raise UserError(f"image table names parts {unknown} that the pointer file does not define")
        self.failed: dict[int, str] = {}
        self.shape = (len(self.origin_row), self.size, self.size) + ((3,) if mode == "RGB" else ())
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.origin_row)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.take(np.array([int(key)]))[0][0]
        # A slice costs O(its length), not O(len(self)): encoders slice 1,024 rows at a time.
        rows = np.arange(*key.indices(len(self))) if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        return self.take(rows)[0]

    def take(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(images, ok): ok[i] is False where row rows[i] could not be decoded (image left black)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} images")
        rows = rows % max(len(self), 1)
        out = np.zeros((len(rows),) + self.shape[1:], dtype=np.uint8)
        ok = np.ones(len(rows), dtype=bool)
        chunks = [np.arange(i, min(i + CHUNK, len(rows))) for i in range(0, len(rows), CHUNK)]
        if self.workers > 1 and len(chunks) > 1:
            # PIL releases the GIL while decoding and resizing, so threads scale on JPEG files.
            with ThreadPoolExecutor(self.workers) as ex:
                list(ex.map(lambda pos: self._fill(rows, pos, out, ok), chunks))
        else:
            for pos in chunks:
                self._fill(rows, pos, out, ok)
        return out, ok

    def _fill(self, rows: np.ndarray, pos: np.ndarray, out: np.ndarray, ok: np.ndarray) -> None:
        origin = self.origin[rows[pos]]
        for name in pd.unique(origin):
            sel = pos[origin == name]
            src = self.parts[name]
            at: dict[int, list[int]] = {}  # a row asked for twice is decoded once
            for i, r in zip(sel, self.origin_row[rows[sel]]):
                at.setdefault(int(r), []).append(int(i))
            for r, img in src.load(list(at), draft_size=self.size):
                arr = None if img is None else to_array(img, self.size, self.mode)
                for i in at[r]:
                    if arr is None:
                        ok[i] = False
                        self.failed[int(rows[i])] = src.failed.get(r, "unreadable")
                    else:
                        out[i] = arr


def _part(spec: dict, base: Path):
    kind = spec.get("kind")
    if kind == "files":
        paths = pd.read_parquet(base / spec["paths"], columns=["path"])["path"].tolist()
        return PathSource(spec["root"], paths, name=spec.get("name", "files"))
    if kind == "laion":
        # the key rule's settings travel with the pointer: rows are joined to tars as the pool did
        rule = {k: spec[k] for k in ("samples_per_shard", "shard_digits") if k in spec}
        src = LaionSource(spec["root"], spec.get("shards"), index_cache=base / spec["index_cache"]
                          if spec.get("index_cache") else None, **rule)
        src.shard_index()  # build it once here, not concurrently in the decoding threads
        return src
    raise UserError(f"unknown image part kind {kind!r} (expected files or laion)")


def from_pointer(path: str | os.PathLike) -> LazyImages:
    """A LazyImages from a pointer file: {size, mode, workers, parts: {name: spec}, table?}.
    With one part the rows are that part's rows in order; with several, `table` (a parquet beside
    the pointer) gives each row's origin and origin_row."""
    path = Path(path)
    spec = json.loads(path.read_text())
    base = path.parent
    parts = {name: _part(p, base) for name, p in spec["parts"].items()}
    if spec.get("table"):
        t = pd.read_parquet(base / spec["table"], columns=["origin", "origin_row"])
        origin, origin_row = t["origin"].to_numpy(), t["origin_row"].to_numpy()
    else:
        (name, src), = parts.items()
        origin, origin_row = np.full(len(src), name, dtype=object), np.arange(len(src))
    return LazyImages(parts, origin, origin_row, spec["size"], spec["mode"], spec.get("workers", 1))


def write_pointer(path: str | os.PathLike, parts: dict, size: int, mode: str, workers: int,
                  table: str | None = None) -> None:
    spec = {"size": int(size), "mode": mode, "workers": int(workers), "parts": parts, "code": code_version()}
    if table:
        spec["table"] = table
    Path(path).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def code_version() -> str:
    """sha256 of the full profile's adapter code: a pointer written by other adapter code is a
    different file, so DVC reruns every stage that decodes through it."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
