"""The LAION adapter: metadata parquet + released img_emb/text_emb + img2dataset tars."""
from __future__ import annotations

import io
import json
import math
import os
import re
import tarfile
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from selectbench.core.errors import UserError
from selectbench.core.io import atomic_path
from selectbench.full.decode import IMAGE_EXTENSIONS, _check_rows, _ErrorLog

_PART_RE = re.compile(r"_(\d+)\.(?:parquet|npy)$")
# LAION's SAMPLE_ID is never a tar key: img2dataset names members by its own key (below), and
# writes that key into the per-shard parquet beside each tar, whence a `key` column comes.
_META_ALIASES = {"key": ("key",), "caption": ("caption", "TEXT"), "url": ("url", "URL")}
SHARD_DIGITS = 5  # img2dataset's oom_shard_count default
SAMPLES_PER_SHARD = 10000  # img2dataset's number_sample_per_shard default
_EMB_DIRS = {"img": ("img_emb", "images"), "text": ("text_emb", "texts")}
_EMB_PREFIX = {"img": "img_emb_", "text": "text_emb_"}


@dataclass(frozen=True)
class _Part:
    number: int
    meta: Path
    rows: int
    emb: dict  # kind -> Path


class LaionSource(_ErrorLog):
    """LAION-400M as released: metadata/metadata_N.parquet with img_emb/img_emb_N.npy and
    text_emb/text_emb_N.npy in the same row order per part (the LAION-400M embedding release names
    the folders images/ and texts/; both spellings work, as do padded and unpadded part numbers).
    Images come from img2dataset shards (KEY.jpg/.txt/.json members), by default under root/shards.

    Alignment is checked on construction from file headers only (parquet footers, .npy headers),
    so opening a 400M-row pool is cheap; any mismatch is a UserError naming the file.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        shards: str | os.PathLike | None = None,
        *,
        name: str = "laion",
        index_cache: str | os.PathLike | None = None,
        samples_per_shard: int = SAMPLES_PER_SHARD,
        shard_digits: int = SHARD_DIGITS,
    ):
        self.name = name
        self.root = Path(root)
        self.samples_per_shard, self.shard_digits = int(samples_per_shard), int(shard_digits)
        self.key_from = None  # 'column' or 'img2dataset rule', once meta() has run
        self._init_errors()
        meta_dir = self.root / "metadata"
        if not meta_dir.is_dir():
            raise UserError(f"{meta_dir}: LAION metadata folder not found")
        metas = _numbered(meta_dir, "metadata_", ".parquet")
        if not metas:
            raise UserError(f"{meta_dir}: no metadata_N.parquet parts")
        emb_files: dict[str, dict[int, Path]] = {}
        self._emb_dir: dict[str, Path | None] = {}
        for kind, dirs in _EMB_DIRS.items():
            # 'images/' may just as well hold img2dataset tars, so a folder only counts once it
            # holds parts with the expected prefix.
            d = next((self.root / x for x in dirs if _has_prefix(self.root / x, _EMB_PREFIX[kind])), None)
            self._emb_dir[kind] = d
            if d is not None:
                emb_files[kind] = _numbered(d, _EMB_PREFIX[kind], ".npy")
                for n, p in emb_files[kind].items():
                    if n not in metas:
                        raise UserError(f"{p}: embedding part {n} has no metadata part in {meta_dir}")
        self.dims: dict[str, int] = {}
        parts = []
        for n in sorted(metas):
            mp = metas[n]
            try:
                rows = pq.ParquetFile(mp).metadata.num_rows
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{mp}: not a readable parquet file ({e})") from None
            emb = {}
            for kind, files in emb_files.items():
                if n not in files:
                    raise UserError(
                        f"{self._emb_dir[kind] / (_EMB_PREFIX[kind] + mp.stem.split('_', 1)[1] + '.npy')}: "
                        f"missing (metadata part {mp.name} has no {kind} embeddings)"
                    )
                ep = files[n]
                shape = _npy_shape(ep)
                if len(shape) != 2:
                    raise UserError(f"{ep}: expected a 2-D (rows, dim) array, got shape {shape}")
                if shape[0] != rows:
                    raise UserError(f"{ep}: {shape[0]} rows but {mp.name} has {rows} (parts must align row by row)")
                if self.dims.setdefault(kind, shape[1]) != shape[1]:
                    raise UserError(f"{ep}: embedding dim {shape[1]} differs from earlier parts ({self.dims[kind]})")
                emb[kind] = ep
            parts.append(_Part(n, mp, rows, emb))
        self.parts: list[_Part] = parts
        self.offsets = np.concatenate([[0], np.cumsum([p.rows for p in parts])]).astype(np.int64)
        self.shards_dir = Path(shards) if shards is not None else self.root / "shards"
        self.index_cache = Path(index_cache) if index_cache is not None else None
        self._meta: pd.DataFrame | None = None
        self._shard_index: pd.DataFrame | None = None
        self._shard_paths: list[Path] = []

    def __len__(self) -> int:
        return int(self.offsets[-1])

    # -- metadata

    def meta(self) -> pd.DataFrame:
        """sample_id ('laion:KEY'), label (-1), caption, key, url, part, part_row."""
        if self._meta is None:
            first = self._first_shards()
            frames = [self._read_meta_part(p, first[p.number]) for p in self.parts]
            df = pd.concat(frames, ignore_index=True)
            dup = df["key"].duplicated()
            if dup.any():
                i = int(np.flatnonzero(dup.to_numpy())[0])
                part = self.parts[int(np.searchsorted(self.offsets, i, side="right") - 1)]
                raise UserError(f"{part.meta}: key {df['key'].iloc[i]!r} occurs twice in the metadata")
            df.insert(0, "sample_id", self.name + ":" + df["key"])
            df.insert(1, "label", np.full(len(df), -1, dtype=np.int64))
            self._meta = df
        return self._meta.copy()

    def _first_shards(self) -> dict[int, int]:
        """part number -> img2dataset shard id of its first row. img2dataset reads the input files
        of a folder in sorted name order and starts a new shard at each file."""
        first, nxt = {}, 0
        for part in sorted(self.parts, key=lambda q: q.meta.name):
            first[part.number] = nxt
            nxt += -(-part.rows // self.samples_per_shard)
        return first

    def rule_keys(self, part: _Part, first_shard: int) -> np.ndarray:
        """img2dataset's key of each row: shard id * 10**d + row within the shard, zero-padded to
        shard_digits + d digits, d = ceil(log10(samples_per_shard)) (its compute_key)."""
        d = math.ceil(math.log10(self.samples_per_shard))
        r = np.arange(part.rows, dtype=np.int64)
        true_key = (first_shard + r // self.samples_per_shard) * 10**d + r % self.samples_per_shard
        return np.char.zfill(true_key.astype(str), self.shard_digits + d).astype(object)

    def _read_meta_part(self, part: _Part, first_shard: int) -> pd.DataFrame:
        names = pq.ParquetFile(part.meta).schema_arrow.names
        pick = {}
        for col, aliases in _META_ALIASES.items():
            found = next((a for a in aliases if a in names), None)
            if found is None and col == "caption":
                raise UserError(f"{part.meta}: no {col!r} column (has {', '.join(names)})")
            pick[col] = found
        t = pq.read_table(part.meta, columns=[c for c in pick.values() if c])
        if pick["key"] is None:
            key = pd.Series(self.rule_keys(part, first_shard))
            self.key_from = "img2dataset rule"
        else:
            key = t.column(pick["key"]).to_pandas()
            self.key_from = "column"
        if key.isna().any():
            raise UserError(f"{part.meta}: {int(key.isna().sum())} rows have no key")
        out = pd.DataFrame(
            {
                "caption": t.column(pick["caption"]).to_pandas().fillna("").astype(str),
                "key": key.astype(str),
                "url": t.column(pick["url"]).to_pandas().fillna("").astype(str) if pick["url"] else "",
                "part": np.int32(part.number),
                "part_row": np.arange(part.rows, dtype=np.int64),
            }
        )
        return out[["caption", "key", "url", "part", "part_row"]]

    # -- embeddings

    def _emb_paths(self, kind: str) -> list[Path]:
        if kind not in _EMB_DIRS:
            raise ValueError(f"kind must be 'img' or 'text', got {kind!r}")
        if self._emb_dir[kind] is None:
            raise UserError(f"{self.root}: no {kind} embeddings ({' or '.join(_EMB_DIRS[kind])}/ folder)")
        return [p.emb[kind] for p in self.parts]

    def embeddings(self, kind: str, rows: Sequence[int] | None = None, *, mmap: bool = True) -> np.ndarray:
        """All rows (or the given rows, in the given order) in stored dtype (float16 in LAION).

        A single part comes back as a read-only memmap; several parts are concatenated into RAM,
        so for a full pool pass rows."""
        paths = self._emb_paths(kind)
        # Gathering rows only ever needs the touched pages, so it always memory-maps.
        arrays = [_load_npy(p, mmap or rows is not None) for p in paths]
        if rows is None:
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        r = _check_rows(rows, len(self))
        part_of = np.searchsorted(self.offsets, r, side="right") - 1
        out = np.empty((len(r), arrays[0].shape[1]), dtype=arrays[0].dtype)
        for i in np.unique(part_of):
            sel = part_of == i
            out[sel] = arrays[i][r[sel] - self.offsets[i]]
        return out

    def image_embeddings(self, mmap: bool = True, rows: Sequence[int] | None = None) -> np.ndarray:
        return self.embeddings("img", rows, mmap=mmap)

    def text_embeddings(self, mmap: bool = True, rows: Sequence[int] | None = None) -> np.ndarray:
        return self.embeddings("text", rows, mmap=mmap)

    # -- images

    def shard_index(self) -> pd.DataFrame:
        """key -> (shard, offset, size) for every image member of every shard, from tar headers
        only. Cached on the object and, when index_cache is set, on disk (rebuilt if any shard's
        size or mtime changed)."""
        if self._shard_index is not None:
            return self._shard_index
        if not self.shards_dir.is_dir():
            raise UserError(f"{self.shards_dir}: image shard folder not found (img2dataset output with NNNNN.tar)")
        shards = sorted(self.shards_dir.rglob("*.tar"))
        if not shards:
            raise UserError(f"{self.shards_dir}: no .tar shards")
        self._shard_paths = shards
        stamp = [[s.relative_to(self.shards_dir).as_posix(), s.stat().st_size, s.stat().st_mtime_ns] for s in shards]
        idx = self._read_index_cache(stamp)
        if idx is None:
            idx = self._scan_shards(shards)
            self._write_index_cache(idx, stamp)
        self._shard_index = idx
        self._key_lookup = pd.Index(idx["key"])
        return idx

    def _scan_shards(self, shards: list[Path]) -> pd.DataFrame:
        keys, shard_no, offsets, sizes = [], [], [], []
        seen: set[str] = set()
        for i, path in enumerate(shards):
            try:
                with tarfile.open(path, mode="r:") as tf:
                    while True:
                        try:
                            m = tf.next()
                        except tarfile.ReadError as e:
                            warnings.warn(f"{path}: tar ends early ({e}); indexed the members before that")
                            break
                        if m is None:
                            break
                        if not m.isfile():
                            continue
                        stem, ext = os.path.splitext(os.path.basename(m.name))
                        if ext.lower() not in IMAGE_EXTENSIONS or stem in seen:
                            continue
                        seen.add(stem)
                        keys.append(stem)
                        shard_no.append(i)
                        offsets.append(m.offset_data)
                        sizes.append(m.size)
            except tarfile.ReadError as e:
                warnings.warn(f"{path}: not a readable tar ({e}); skipped")
        return pd.DataFrame(
            {
                "key": pd.array(keys, dtype="str"),
                "shard": np.asarray(shard_no, dtype=np.int32),
                "offset": np.asarray(offsets, dtype=np.int64),
                "size": np.asarray(sizes, dtype=np.int64),
            }
        )

    def _read_index_cache(self, stamp: list) -> pd.DataFrame | None:
        if self.index_cache is None or not self.index_cache.exists():
            return None
        try:
            t = pq.read_table(self.index_cache)
            saved = json.loads((t.schema.metadata or {}).get(b"selectbench_shards", b"null"))
        except (pa.ArrowException, OSError, ValueError):
            return None
        if saved != {"dir": str(self.shards_dir.resolve()), "shards": stamp}:
            return None
        return t.to_pandas()

    def _write_index_cache(self, idx: pd.DataFrame, stamp: list) -> None:
        if self.index_cache is None:
            return
        t = pa.Table.from_pandas(idx, preserve_index=False)
        t = t.replace_schema_metadata(
            {b"selectbench_shards": json.dumps({"dir": str(self.shards_dir.resolve()), "shards": stamp}).encode()}
        )
        with atomic_path(self.index_cache) as tmp:
            pq.write_table(t, tmp)

    def download_status(self) -> pd.Series | None:
        """key -> img2dataset's status ('success', 'failed_to_download', ...), from the NNNNN.parquet
        it writes beside each tar; None when the shard folder holds none."""
        frames = []
        for path in sorted(self.shards_dir.rglob("*.parquet")):
            try:
                f = pq.ParquetFile(path)
                if not {"key", "status"} <= set(f.schema_arrow.names):
                    continue
                frames.append(f.read(columns=["key", "status"]).to_pandas())
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path}: not a readable parquet file ({e})") from None
        if not frames:
            return None
        df = pd.concat(frames, ignore_index=True).drop_duplicates("key", keep="last")
        return pd.Series(df["status"].fillna("").astype(str).to_numpy(), index=df["key"].astype(str))

    def image_check(self) -> tuple[np.ndarray, np.ndarray, dict]:
        """Which metadata rows have an image in the tars, from tar headers and img2dataset's
        per-shard parquet only (nothing decoded). Returns (ok per row, reason per row ('' if ok),
        facts): download_failed (img2dataset's status is not success), tar_missing (no tar for the
        shard the key names), not_in_tar (the tar has no image member with that key), zero_byte
        (an empty member). facts: keys_name_shards (tars the unmatched keys point to) and
        keys_name_present (how many of those exist), to tell wrong keys from missing tars."""
        idx = self.shard_index()
        if self._meta is None:
            self.meta()
        keys = self._meta["key"].to_numpy()
        pos = self._key_lookup.get_indexer(keys)
        found = pos >= 0
        reason = np.full(len(keys), "", dtype=object)
        empty = np.zeros(len(keys), dtype=bool)
        empty[found] = idx["size"].to_numpy()[pos[found]] == 0
        reason[empty] = "zero_byte"
        miss = np.flatnonzero(~found)
        status = self.download_status()
        if status is not None and len(miss):
            st = status.reindex(keys[miss]).to_numpy()
            failed = pd.notna(st) & (st != "success")
            reason[miss[failed]] = "download_failed"
            miss = miss[~failed]
        d = math.ceil(math.log10(self.samples_per_shard))
        k = pd.Series(keys[miss], dtype=object).astype(str)
        prefix = k.str.slice(0, -d).where(k.str.fullmatch(r"\d+") & (k.str.len() > d))
        tars = {p.stem for p in self._shard_paths}
        has_tar = (prefix.isin(tars) | prefix.isna()).to_numpy()  # a key outside the rule names no tar
        reason[miss[has_tar]] = "not_in_tar"
        reason[miss[~has_tar]] = "tar_missing"
        named = set(prefix.dropna())
        facts = {"key_from": self.key_from, "keys_name_shards": len(named), "keys_name_present": len(named & tars),
                 "tars": len(tars)}
        return reason == "", reason, facts

    def load(self, rows: Sequence[int], *, draft_size: int | None = None) -> Iterator[tuple[int, Image.Image | None]]:
        r = _check_rows(rows, len(self))
        idx = self.shard_index()
        if self._meta is None:
            self.meta()
        keys = self._meta["key"].to_numpy()[r] if len(r) else np.array([], dtype=object)
        pos = self._key_lookup.get_indexer(keys) if len(r) else np.array([], dtype=np.int64)
        shard = idx["shard"].to_numpy()
        offset = idx["offset"].to_numpy()
        size = idx["size"].to_numpy()
        handles: OrderedDict[int, io.BufferedReader] = OrderedDict()
        try:
            for row, p in zip(r.tolist(), pos.tolist()):
                if p < 0:
                    self._fail(row, "missing")
                    yield row, None
                    continue
                s = int(shard[p])
                fh = handles.pop(s, None) or open(self._shard_paths[s], "rb")  # noqa: SIM115 - closed in finally
                handles[s] = fh
                if len(handles) > 16:  # bounded: a shuffled read order may touch thousands of shards
                    handles.popitem(last=False)[1].close()
                fh.seek(int(offset[p]))
                data = fh.read(int(size[p]))
                if size[p] and len(data) < size[p]:
                    self._fail(row, "truncated")
                    yield row, None
                    continue
                yield row, self._decoded(row, data, draft_size)
        finally:
            for fh in handles.values():
                fh.close()


def _has_prefix(folder: Path, prefix: str) -> bool:
    if not folder.is_dir():
        return False
    with os.scandir(folder) as it:
        return any(e.name.startswith(prefix) for e in it)


def _numbered(folder: Path, prefix: str, suffix: str) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if not (p.name.startswith(prefix) and p.name.endswith(suffix)):
            continue
        m = _PART_RE.search(p.name)
        if m is None or p.name[len(prefix) : -len(suffix)] != m.group(1):
            raise UserError(f"{p}: cannot read a part number from the name (expected {prefix}N{suffix})")
        n = int(m.group(1))
        if n in out:
            raise UserError(f"{p}: part {n} also present as {out[n].name}")
        out[n] = p
    return out


def _npy_shape(path: Path) -> tuple:
    try:
        return tuple(np.load(path, mmap_mode="r").shape)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None
