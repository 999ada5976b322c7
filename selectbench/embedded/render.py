"""Drawing any image into the base format (28 px grey, object centred by its ink), and a process pool."""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

SIDE = 28
# Inverted grey level above which a pixel counts as object when trimming the canvas; anti-aliased
# edges and off-white paper backgrounds in clip-art stay below it.
INK_THRESHOLD = 12


def _grey_on(im: Image.Image, background: int) -> Image.Image:
    """Grey rendering of `im` over a uniform background (0 black, 255 white)."""
    if im.mode in ("L", "RGB"):
        return im.convert("L")
    rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    ground = Image.new("RGBA", rgba.size, (background, background, background, 255))
    return Image.alpha_composite(ground, rgba).convert("L")


def ink_to_base(ink: np.ndarray) -> np.ndarray | None:
    """Bright-on-black grey image -> trimmed, longest edge 28 px, sharpened, centred. None if blank."""
    mask = ink > INK_THRESHOLD
    if not mask.any():
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    crop = np.ascontiguousarray(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    h, w = crop.shape
    scale = SIDE / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = Image.fromarray(crop).resize((nw, nh), Image.Resampling.LANCZOS)
    small = small.filter(ImageFilter.UnsharpMask(radius=1.0, percent=100, threshold=0))
    out = np.zeros((SIDE, SIDE), dtype=np.uint8)
    y0, x0 = (SIDE - nh) // 2, (SIDE - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = np.asarray(small, dtype=np.uint8)
    return out


def to_base_format(im: Image.Image, work_side: int | None = None) -> np.ndarray | None:
    """Composite on white and negate (the base format's polarity); a drawing that is invisible on
    white (white ink on transparency) is composited on black instead. None if blank either way."""
    factor = math.ceil(max(im.size) / work_side) if work_side else 1

    def shrink(g: Image.Image) -> Image.Image:
        # Box reduction is exact enough before the final Lanczos resize and far cheaper.
        return g.reduce(factor) if factor > 1 else g

    ink = 255 - np.asarray(shrink(_grey_on(im, 255)), dtype=np.uint8)
    out = ink_to_base(ink)
    if out is None and im.mode not in ("L", "RGB"):
        out = ink_to_base(np.asarray(shrink(_grey_on(im, 0)), dtype=np.uint8))
    return out


def _classify_decode_error(e: BaseException) -> str:
    msg = str(e).lower()
    if isinstance(e, EOFError) or "truncat" in msg or "broken data stream" in msg:
        return "truncated"
    return "unreadable"


def _parallel_map(fn: Callable, tasks: Sequence, workers: int, desc: str) -> list:
    if not tasks:
        return []
    bar = tqdm(total=len(tasks), desc=desc, unit="img", disable=None, file=sys.stderr)
    out = []
    if workers <= 1:
        for t in tasks:
            out.append(fn(t))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for r in ex.map(fn, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8) or 1))):
                out.append(r)
                bar.update()
    bar.close()
    return out
