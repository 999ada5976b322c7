"""Source adapters for the full profile: one interface over the real release formats.

Every adapter exposes ``name``, ``len()``, ``meta()`` and ``load(rows)``; ``load`` decodes on demand
and yields ``None`` for an item it cannot decode, counting the reason in ``self.errors`` (web pools
always hold some broken files, and one bad file must not stop a stage). Mistakes in the inputs
themselves (misaligned parts, bad headers, unknown class folders) raise ``UserError`` instead,
because no result computed from them could be trusted."""
from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from selectbench.core.errors import UserError

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


def decodable(src, rows: Sequence[int] | None = None, *, size: int, workers: int = 1,
              chunk: int = 256) -> tuple[np.ndarray, Counter]:
    """(ok per row, Counter of reasons) from decoding every row at `size` (JPEG draft scale, as
    the stages decode), on `workers` threads. Run once where a source enters the pipeline, so an
    undecodable file is left out and counted there, never embedded or trained as a blank."""
    rows = np.arange(len(src)) if rows is None else np.asarray(rows, dtype=np.int64)
    ok = np.zeros(len(rows), dtype=bool)
    reason = np.full(len(rows), "", dtype=object)

    def run(lo: int) -> None:
        at = {int(r): i for i, r in enumerate(rows[lo:lo + chunk].tolist(), lo)}
        for r, img in src.load(list(at), draft_size=size):
            if img is not None:
                try:  # the conversion every stage applies: a file that decodes but cannot convert fails here
                    to_array(img, 8, "RGB")
                    ok[at[r]] = True
                except Exception:  # noqa: BLE001 - same breadth as decode_image
                    reason[at[r]] = "corrupt"
            else:
                reason[at[r]] = src.failed.get(r, "unreadable")

    starts = range(0, len(rows), chunk)
    if workers > 1 and len(rows) > chunk:
        # PIL releases the GIL while decoding, so threads scale; each load() call opens its own files.
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(run, starts))
    else:
        for lo in starts:
            run(lo)
    return ok, Counter(reason[~ok].tolist())


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
