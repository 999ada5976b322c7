"""Source adapters for the full profile: one interface over the real release formats.

Every adapter exposes ``name``, ``len()``, ``meta()`` and ``load(rows)``; ``load`` decodes on demand
and yields ``None`` for an item it cannot decode, counting the reason in ``self.errors`` (web pools
always hold some broken files, and one bad file must not stop a stage). Mistakes in the inputs
themselves (misaligned parts, bad headers, unknown class folders) raise ``UserError`` instead,
because no result computed from them could be trusted.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from .common import UserError, make_index

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)


@runtime_checkable
class Source(Protocol):
    name: str
    errors: Counter

    def __len__(self) -> int: ...

    def meta(self) -> pd.DataFrame: ...

    def load(self, rows: Sequence[int]) -> Iterator[tuple[int, Image.Image | None]]: ...


# ----------------------------------------------------------------------------------------------
# Decoding and conversion shared by every adapter


def to_array(
    img: Image.Image, size: int, mode: Literal["L", "RGB"] = "RGB", *, fit: Literal["crop", "squash"] = "crop"
) -> np.ndarray:
    """Any PIL image -> uint8 array of shape (size, size) for 'L' or (size, size, 3) for 'RGB'.

    fit='crop' takes the centred square of the shorter side (the ImageNet evaluation convention,
    so aspect ratio is preserved); fit='squash' resizes the whole image. Transparent pixels are
    composited on white, because web PNGs and clip-art are drawn for a white page and a black
    background would change what a classifier sees.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if fit not in ("crop", "squash"):
        raise ValueError(f"fit must be 'crop' or 'squash', got {fit!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    size = int(size)
    # For a JPEG not decoded yet this makes libjpeg decode at 1/2..1/8 scale: a 6000 px photo then
    # costs a fraction of the memory and time. A no-op for other formats or loaded images.
    try:
        img.draft(None, (size, size))
    except (OSError, ValueError):
        pass
    if not _has_alpha(img) and img.mode in _REDUCIBLE:
        img = _reduce(img, size)
    img = _to_8bit(img, mode)
    img = _reduce(img, size)
    w, h = img.size
    if fit == "crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        box = (left, top, left + s, top + s)
    else:
        box = (0, 0, w, h)
    img = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    arr = np.array(img, dtype=np.uint8)
    if mode == "RGB" and arr.ndim == 2:  # defensive: convert() above guarantees 3 channels
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr


# Modes Image.reduce() accepts without losing meaning (alpha modes are composited first instead,
# since box-averaging colour under fully transparent pixels bleeds hidden colours into edges).
_REDUCIBLE = frozenset({"L", "RGB", "CMYK", "YCbCr", "HSV", "LAB", "I", "F"})
_HIGH_DEPTH = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def _reduce(img: Image.Image, size: int) -> Image.Image:
    """Integer box-downscale while the image stays >= 2x the target (cheap, keeps quality)."""
    factor = min(img.size) // (2 * size)
    if factor >= 2 and img.mode in _REDUCIBLE:
        return img.reduce(factor)
    return img


def _has_alpha(img: Image.Image) -> bool:
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return img.mode in ("P", "L", "RGB", "1") and "transparency" in img.info


def _to_8bit(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in _HIGH_DEPTH:
        img = _scale_high_depth(img)
    if _has_alpha(img):
        if img.mode == "La":  # premultiplied grey has no direct route to RGBA in Pillow
            img = img.convert("LA")
        rgba = img.convert("RGBA")
        page = Image.new("RGB", rgba.size, (255, 255, 255))
        page.paste(rgba, mask=rgba.getchannel("A"))
        img = page
    if img.mode != mode:
        img = img.convert(mode)
    return img


def _scale_high_depth(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float image -> 8-bit 'L'. Pillow's own convert('L') clips instead of
    scaling, which turns nearly every 16-bit scan or medical PNG into a white square."""
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        out = _scale_to_255(a.astype(np.float64), 65535.0)
    elif img.mode == "I":
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo >= 0 and hi <= 255:
            out = a
        elif lo >= 0 and hi <= 65535:  # 16-bit PNGs often arrive as mode 'I'
            out = _scale_to_255(a.astype(np.float64), 65535.0)
        else:
            out = _min_max(a.astype(np.float64))
    else:  # 'F'
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo >= 0 and hi <= 1.0:
            out = _scale_to_255(a, 1.0)
        elif lo >= 0 and hi <= 255:
            out = a
        else:
            out = _min_max(a)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _scale_to_255(a: np.ndarray, full: float) -> np.ndarray:
    return a * (255.0 / full)


def _min_max(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros_like(a)
    return (a - lo) * (255.0 / (hi - lo))


def decode_image(data: bytes, draft_size: int | None = None) -> tuple[Image.Image | None, str | None]:
    """Bytes -> (fully decoded image, None) or (None, reason). Reasons: zero_byte, unreadable
    (not an image Pillow knows), truncated, too_large (decompression-bomb guard), corrupt."""
    if not data:
        return None, "zero_byte"
    try:
        with warnings.catch_warnings():
            # Big-but-legal web images trigger this warning by the thousand; the hard limit
            # (DecompressionBombError) still applies and is reported as too_large.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if draft_size:
                img.draft(None, (int(draft_size), int(draft_size)))
            # Decode now: Pillow decodes lazily, and a truncated file must fail here, where it is
            # counted, not later inside a caller's transform.
            img.load()
        return img, None
    except Image.DecompressionBombError:
        return None, "too_large"
    except UnidentifiedImageError:
        return None, "unreadable"
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed files raise anything from struct.error to IndexError
        return None, "truncated" if "truncat" in str(e).lower() else "corrupt"


def _check_rows(rows: Sequence[int], n: int) -> np.ndarray:
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    if r.size and (r.min() < 0 or r.max() >= n):
        bad = int(r[(r < 0) | (r >= n)][0])
        raise IndexError(f"row {bad} out of range for a source of {n} items")
    return r


class _ErrorLog:
    """errors: Counter by reason (cumulative over the object's life); failed: row -> reason."""

    def _init_errors(self) -> None:
        self.errors: Counter = Counter()
        self.failed: dict[int, str] = {}

    def _fail(self, row: int, reason: str) -> None:
        self.errors[reason] += 1
        self.failed[int(row)] = reason

    def _decoded(self, row: int, data: bytes, draft_size: int | None) -> Image.Image | None:
        """The decoded image, or None with the reason recorded."""
        img, reason = decode_image(data, draft_size)
        if img is None:
            self._fail(row, reason)
        return img


# ----------------------------------------------------------------------------------------------
# ImageFolder layouts (ImageNet train/val, -V2, -Sketch, -R, -A)


class FileSource(_ErrorLog):
    """Images stored one file each: self._meta has a `path` column relative to self.root. Missing,
    unreadable and undecodable files are yielded as None and counted by reason."""

    root: Path
    _meta: pd.DataFrame

    def __len__(self) -> int:
        return len(self._meta)

    def meta(self) -> pd.DataFrame:
        return self._meta.copy()

    def load(self, rows: Sequence[int], *, draft_size: int | None = None) -> Iterator[tuple[int, Image.Image | None]]:
        paths = self._meta["path"].to_numpy()
        for r in _check_rows(rows, len(self)):
            r = int(r)
            try:
                data = (self.root / paths[r]).read_bytes()
            except FileNotFoundError:
                self._fail(r, "missing")
                yield r, None
                continue
            except OSError:
                self._fail(r, "unreadable")
                yield r, None
                continue
            yield r, self._decoded(r, data, draft_size)


class PathSource(FileSource):
    """Files listed explicitly, relative to root (OpenImages images by ImageID, a saved file list)."""

    def __init__(self, root: str | os.PathLike, paths: Sequence[str], *, name: str = "files"):
        self.name = name
        self.root = Path(root)
        self._init_errors()
        if not self.root.is_dir():
            raise UserError(f"{self.root}: image folder not found")
        paths = [str(p) for p in paths]
        self._meta = pd.DataFrame({"sample_id": [f"{name}:{p}" for p in paths], "path": paths})


class ImageFolderSource(FileSource):
    """root/<class folder>/<image> (recursing below the class folder, as torchvision does).

    class_index_from='name': the folder name is looked up in class_names (its position is the label);
    without class_names, folders are sorted and numbered 0..C-1. class_index_from='int': the folder
    name is the label (ImageNet-V2). A folder that cannot be mapped is a UserError: silently
    dropping a class, or giving it label -1, would skew every per-class metric downstream.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        class_names: Sequence[str] | str | os.PathLike | None = None,
        *,
        class_index_from: Literal["name", "int"] = "name",
        name: str = "imagefolder",
        extensions: frozenset[str] = IMAGE_EXTENSIONS,
    ):
        self.name = name
        self.root = Path(root)
        self._init_errors()
        if class_index_from not in ("name", "int"):
            raise UserError(f"class_index_from must be 'name' or 'int', got {class_index_from!r}")
        if not self.root.is_dir():
            raise UserError(f"{self.root}: image folder not found")
        names = _read_class_list(class_names) if class_names is not None else None
        with os.scandir(self.root) as it:
            folders = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        if not folders:
            raise UserError(f"{self.root}: no class folders (expected root/<class>/<image>)")
        label_of: dict[str, int] = {}
        if class_index_from == "int":
            for f in folders:
                if not re.fullmatch(r"\d+", f):
                    raise UserError(f"{self.root / f}: class folder is not an integer (class_index_from='int')")
                label_of[f] = int(f)
                if names is not None and int(f) >= len(names):
                    raise UserError(f"{self.root / f}: class index {int(f)} >= {len(names)} class names")
            folders.sort(key=int)
        elif names is not None:
            pos = {n: i for i, n in enumerate(names)}
            for f in folders:
                if f not in pos:
                    raise UserError(f"{self.root / f}: folder {f!r} is not in the class list ({len(names)} names)")
                label_of[f] = pos[f]
        else:
            label_of = {f: i for i, f in enumerate(folders)}
        self.class_names = list(names) if names is not None else (None if class_index_from == "int" else folders)

        rel, labels, cls = [], [], []
        for f in folders:
            for path in _walk_images(self.root, f, extensions):
                rel.append(path)
                labels.append(label_of[f])
                cls.append(f if names is None or class_index_from == "name" else names[label_of[f]])
        if not rel:
            raise UserError(f"{self.root}: no image files under the class folders")
        self._meta = pd.DataFrame(
            {
                "sample_id": [f"{name}:{p}" for p in rel],
                "label": np.asarray(labels, dtype=np.int64),
                "caption": "",
                "path": rel,
                "class_name": cls,
            }
        )



def _walk_images(root: Path, folder: str, extensions: frozenset[str]) -> list[str]:
    """Sorted posix paths relative to root of the image files under root/folder."""
    out = []
    base = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(os.path.join(base, folder)):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, base).replace(os.sep, "/")
        for fn in filenames:
            if not fn.startswith(".") and os.path.splitext(fn)[1].lower() in extensions:
                out.append(f"{rel}/{fn}")
    return sorted(out)


def _read_class_list(spec: Sequence[str] | str | os.PathLike) -> list[str]:
    """A list of class ids, or a text file with one per line (first token; 'n01440764 tench' works)."""
    if isinstance(spec, (str, os.PathLike)):
        p = Path(spec)
        if not p.is_file():
            raise UserError(f"{p}: class list file not found")
        names = [ln.split()[0] for ln in p.read_text().splitlines() if ln.strip()]
    else:
        names = [str(s) for s in spec]
    if not names:
        raise UserError("class list is empty")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise UserError(f"class list has {n!r} twice")
        seen.add(n)
    return names


def _descend(root: str | os.PathLike, candidates: Sequence[str]) -> Path:
    """Accept either the dataset folder itself or the folder its archive was extracted into."""
    root = Path(root)
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return root


def imagenet_v2(root, wnids, variant: str = "matched-frequency") -> ImageFolderSource:
    """ImageNetV2 tarballs extract to imagenetv2-<variant>-format-val/<0..999>/<hash>.jpeg."""
    root = _descend(root, [f"imagenetv2-{variant}-format-val", f"imagenetv2-{variant}"])
    return ImageFolderSource(root, wnids, class_index_from="int", name="imagenet_v2")


def imagenet_r(root, wnids) -> ImageFolderSource:
    """imagenet-r/<wnid>/<style>_<n>.jpg, 200 of the 1000 wnids (plus a README.txt)."""
    return ImageFolderSource(_descend(root, ["imagenet-r"]), wnids, name="imagenet_r")


def imagenet_a(root, wnids) -> ImageFolderSource:
    """imagenet-a/<wnid>/<name>.jpg, 200 of the 1000 wnids (plus a README.txt)."""
    return ImageFolderSource(_descend(root, ["imagenet-a"]), wnids, name="imagenet_a")


def imagenet_sketch(root, wnids) -> ImageFolderSource:
    """ImageNet-Sketch.zip extracts to sketch/<wnid>/<wnid>_<n>.JPEG, all 1000 wnids."""
    return ImageFolderSource(_descend(root, ["sketch", "ImageNet-Sketch"]), wnids, name="imagenet_sketch")


# ----------------------------------------------------------------------------------------------
# LAION-400M: clip-retrieval metadata + embedding parts, img2dataset tar shards


_PART_RE = re.compile(r"_(\d+)\.(?:parquet|npy)$")
_META_ALIASES = {"key": ("key", "SAMPLE_ID"), "caption": ("caption", "TEXT"), "url": ("url", "URL")}
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
    ):
        self.name = name
        self.root = Path(root)
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
            frames = [self._read_meta_part(p) for p in self.parts]
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

    def _read_meta_part(self, part: _Part) -> pd.DataFrame:
        names = pq.ParquetFile(part.meta).schema_arrow.names
        pick = {}
        for col, aliases in _META_ALIASES.items():
            found = next((a for a in aliases if a in names), None)
            if found is None and col != "url":
                raise UserError(f"{part.meta}: no {col!r} column (has {', '.join(names)})")
            pick[col] = found
        t = pq.read_table(part.meta, columns=[c for c in pick.values() if c])
        key = t.column(pick["key"]).to_pandas()
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
        so for a full pool use iter_embeddings() or pass rows."""
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

    def iter_embeddings(self, kind: str, batch: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(first_row, array) batches of exactly `batch` rows (the last may be shorter), crossing
        part boundaries, so peak memory is one batch whatever the pool size."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        pending: list[np.ndarray] = []
        have, start = 0, 0
        for p in self._emb_paths(kind):
            arr = _load_npy(p, True)
            pos = 0
            while pos < len(arr):
                take = min(batch - have, len(arr) - pos)
                pending.append(np.array(arr[pos : pos + take]))
                have += take
                pos += take
                if have == batch:
                    yield start, pending[0] if len(pending) == 1 else np.concatenate(pending)
                    start += have
                    pending, have = [], 0
            del arr
        if have:
            yield start, pending[0] if len(pending) == 1 else np.concatenate(pending)

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
        self.index_cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.index_cache.with_name(self.index_cache.name + ".tmp")
        pq.write_table(t, tmp)
        os.replace(tmp, self.index_cache)

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


# ----------------------------------------------------------------------------------------------
# OpenImages v7 image-level labels through a schema mapping


_OI_LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")


class OpenImagesLabels:
    """OpenImages image-level labels mapped onto class indices (SELECT's OI1000 strategy).

    labels_csv: one or several label files (ImageID,Source,LabelName,Confidence), e.g.
    oidv7-train-annotations-human-imagelabels.csv. class_descriptions_csv: LabelName,DisplayName
    (v6/v7 files have that header; older headerless files also work). mapping_json:
    {LabelName: class_index} (a list of indices is accepted for a label shared by classes).
    """

    name = "oi"
    source = "openimages"

    def __init__(self, labels_csv, class_descriptions_csv, mapping_json, *, chunksize: int = 1_000_000):
        self.labels_csvs = [Path(p) for p in (labels_csv if isinstance(labels_csv, (list, tuple)) else [labels_csv])]
        for p in self.labels_csvs:
            if not p.is_file():
                raise UserError(f"{p}: OpenImages labels file not found")
        self.chunksize = _positive_int(chunksize, "chunksize")
        self.descriptions = _read_oi_descriptions(Path(class_descriptions_csv))
        self.mapping_path = Path(mapping_json)
        self.mapping = _read_oi_mapping(self.mapping_path)
        known = set(self.descriptions["LabelName"])
        unknown = [k for k in self.mapping if k not in known]
        if unknown:
            raise UserError(
                f"{self.mapping_path}: {len(unknown)} label ids not in {class_descriptions_csv} "
                f"(e.g. {', '.join(map(repr, unknown[:5]))}); keys must be LabelName ids like '/m/09j2d'"
            )

    def mapping_table(self) -> pd.DataFrame:
        """One row per (oi_label, label) pair with the OI display name, for reports."""
        pairs = [(k, c) for k, cs in self.mapping.items() for c in cs]
        df = pd.DataFrame(pairs, columns=["oi_label", "label"]).astype({"label": "int64"})
        names = self.descriptions.drop_duplicates("LabelName").set_index("LabelName")["DisplayName"]
        df["display_name"] = df["oi_label"].map(names)
        return df

    def curate(self, verified_only: bool = True, *, chunksize: int | None = None) -> pd.DataFrame:
        """Index rows (sample_id 'oi:IMAGEID', source, label, score=Confidence, oi_label).

        verified_only keeps Confidence == 1 (human-verified positives); otherwise any
        Confidence > 0 is kept. Confidence 0 is a verified *negative* and is never kept. An image
        appears once per mapped class; when several OI labels map to the same class for one image,
        the highest-confidence one (then the smallest label id) is kept.
        """
        chunksize = _positive_int(chunksize, "chunksize") if chunksize is not None else self.chunksize
        table = self.mapping_table()[["oi_label", "label"]]
        wanted = set(table["oi_label"])
        kept = []
        for path in self.labels_csvs:
            for chunk in _read_oi_labels(path, chunksize):
                conf = chunk["Confidence"]
                keep = chunk["LabelName"].isin(wanted) & ((conf == 1.0) if verified_only else (conf > 0))
                if keep.any():
                    kept.append(chunk.loc[keep, list(_OI_LABEL_COLUMNS)])
        if kept:
            df = pd.concat(kept, ignore_index=True).rename(columns={"LabelName": "oi_label", "Confidence": "score"})
            df = df.merge(table, on="oi_label", how="inner")
            df = df.sort_values(["ImageID", "label", "score", "oi_label"], ascending=[True, True, False, True])
            df = df.drop_duplicates(["ImageID", "label"], keep="first")
        else:
            df = pd.DataFrame({"ImageID": [], "oi_label": [], "score": [], "label": []})
        return make_index(
            sample_id=("oi:" + df["ImageID"].astype(str)).to_numpy(),
            source=self.source,
            label=df["label"].to_numpy(dtype=np.int64),
            score=df["score"].to_numpy(dtype=np.float32),
            oi_label=pd.array(df["oi_label"].astype(str).to_numpy(), dtype="string"),
        )

    def unmapped_classes(self, num_classes: int) -> list[int]:
        """Class indices in [0, num_classes) that no OI label maps to (always empty in the shift)."""
        num_classes = _positive_int(num_classes, "num_classes")
        covered = set()
        for k, cs in self.mapping.items():
            for c in cs:
                if c >= num_classes:
                    raise UserError(f"{self.mapping_path}: {k!r} maps to class {c}, outside 0..{num_classes - 1}")
                covered.add(c)
        return [c for c in range(num_classes) if c not in covered]


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise UserError(f"{what}: expected a positive int, got {v!r}")
    return int(v)


def _read_oi_descriptions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: OpenImages class descriptions file not found")
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    header = first.lstrip("\ufeff").startswith("LabelName")
    # keep_default_na=False: real display names include strings pandas would read as missing.
    df = pd.read_csv(
        path,
        header=0 if header else None,
        names=None if header else ["LabelName", "DisplayName"],
        dtype=str,
        keep_default_na=False,
        encoding="utf-8-sig",
    )
    if list(df.columns[:2]) != ["LabelName", "DisplayName"]:
        raise UserError(f"{path}: expected columns LabelName,DisplayName, got {','.join(map(str, df.columns))}")
    return df[["LabelName", "DisplayName"]]


def _read_oi_mapping(path: Path) -> dict[str, list[int]]:
    if not path.is_file():
        raise UserError(f"{path}: OpenImages mapping file not found")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: expected a non-empty object {{label_id: class_index}}")
    out: dict[str, list[int]] = {}
    for k, v in raw.items():
        vs = v if isinstance(v, list) else [v]
        if not vs or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in vs):
            raise UserError(f"{path}: {k!r} maps to {v!r}; expected a class index >= 0 (or a list of them)")
        out[k] = sorted(set(vs))
    return out


def _read_oi_labels(path: Path, chunksize: int) -> Iterator[pd.DataFrame]:
    try:
        cols = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: not a readable CSV ({e})") from None
    missing = [c for c in _OI_LABEL_COLUMNS if c not in cols]
    if missing:
        raise UserError(f"{path}: lacks columns {missing} (has {', '.join(cols)})")
    try:
        yield from pd.read_csv(
            path,
            usecols=list(_OI_LABEL_COLUMNS),
            dtype={"ImageID": str, "LabelName": str, "Confidence": np.float64},
            chunksize=chunksize,
            encoding="utf-8-sig",
        )
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: bad row ({e})") from None


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX, gzip)


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzip or plain) -> array in native byte order (see parse_idx)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise UserError(f"{path}: IDX file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"{path}: corrupt gzip ({e})") from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, name: str = "idx") -> np.ndarray:
    """IDX bytes -> array. The header (0, 0, dtype code, ndim, then ndim big-endian uint32 sizes)
    must match the payload length exactly."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise UserError(f"{name}: bad IDX magic number {raw[:4].hex() or '(empty)'}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{name}: IDX header cut short")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(f"{name}: {len(raw)} bytes but the header {dims} implies {expected}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


class FashionMNISTSource(_ErrorLog):
    """Fashion-MNIST from its IDX gzip files (Debian dataset-fashion-mnist installs them under
    /usr/share/datasets/fashion-mnist). Captions stay empty: the class name would hand text-based
    curation the label."""

    _PREFIX: ClassVar[dict[str, str]] = {"train": "train", "test": "t10k", "t10k": "t10k"}

    def __init__(self, dir: str | os.PathLike = FASHION_MNIST_DIR, split: str = "train", *, name: str = "fashion_mnist"):
        if split not in self._PREFIX:
            raise UserError(f"split must be 'train' or 'test', got {split!r}")
        self.name = name
        self.split = "test" if split == "t10k" else split
        self.dir = Path(dir)
        self._init_errors()
        prefix = self._PREFIX[split]
        self.files = {k: _idx_file(self.dir, f"{prefix}-{k}-idx{n}-ubyte") for k, n in (("images", 3), ("labels", 1))}
        self.images = read_idx(self.files["images"])
        self.labels = read_idx(self.files["labels"])
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise UserError(f"{self.files['images']}: expected uint8 (n, rows, cols), got {self.images.dtype} {self.images.shape}")
        if self.labels.ndim != 1:
            raise UserError(f"{self.files['labels']}: expected a 1-D label vector, got shape {self.labels.shape}")
        if len(self.labels) != len(self.images):
            raise UserError(f"{self.files['labels']}: {len(self.labels)} labels for {len(self.images)} images")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(FASHION_MNIST_CLASSES)):
            raise UserError(f"{self.files['labels']}: labels outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
        self.labels = self.labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def meta(self) -> pd.DataFrame:
        n = len(self)
        return pd.DataFrame(
            {
                "sample_id": [f"{self.name}:{self.split}/{i:05d}" for i in range(n)],
                "label": self.labels.copy(),
                "caption": "",
            }
        )

    def load(self, rows: Sequence[int], *, draft_size: int | None = None) -> Iterator[tuple[int, Image.Image | None]]:
        # draft_size is accepted so callers can pass it to every adapter alike; 28 px needs none.
        for r in _check_rows(rows, len(self)).tolist():
            yield r, Image.fromarray(self.images[r])

    def checksums(self) -> dict[str, str]:
        return {p.name: sha256(p) for p in self.files.values()}


def _idx_file(folder: Path, stem: str) -> Path:
    for cand in (folder / f"{stem}.gz", folder / stem):
        if cand.is_file():
            return cand
    raise UserError(f"{folder / (stem + '.gz')}: Fashion-MNIST file not found")
