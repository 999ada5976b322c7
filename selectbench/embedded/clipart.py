"""Open Clip Art drawings (Debian's openclipart-png) as grey base-format images, with the
category and caption their folder implies."""
from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from selectbench.embedded.render import _classify_decode_error, to_base_format

# Large clip-art is box-reduced to at most this side before trimming; 512 px keeps thin outlines
# visible after the final 28 px resize while making the crop and filters cheap.
CLIPART_WORK_SIDE = 512
# Drawings above PIL's decompression-bomb threshold are skipped unread, as web downloaders cap the
# image area; 16 Open Clip Art files (0.2%) exceed it yet hold two thirds of all its pixels.
CLIPART_MAX_PIXELS = 89_478_485


def load_clipart(task: tuple[str, str]) -> tuple[str, np.ndarray | None, str, str]:
    """(root, relpath) -> (relpath, image or None, status, sha1). Status 'ok' or a skip reason."""
    root, rel = task
    try:
        data = Path(root, rel).read_bytes()
    except FileNotFoundError:
        return rel, None, "missing", ""
    except OSError:
        return rel, None, "unreadable", ""
    digest = hashlib.sha1(data).hexdigest()
    if not data:
        return rel, None, "empty_file", digest
    try:
        with warnings.catch_warnings():
            # The area is checked right below; PIL's warning about it would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.size[0] * im.size[1] > CLIPART_MAX_PIXELS:
                    return rel, None, "too_large", digest
                im.load()
                if im.mode in ("I", "I;16", "I;16B", "I;16L"):
                    # 16-bit grey PNG: PIL's convert("L") clips every level above 255 to white
                    # instead of scaling, which erased all but the darkest ink.
                    im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
                arr = to_base_format(im, CLIPART_WORK_SIDE)
    except Image.DecompressionBombError:
        return rel, None, "too_large", digest
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return rel, None, _classify_decode_error(e), digest
    if arr is None:
        return rel, None, "blank", digest
    return rel, arr, "ok", digest


_CLIPART_FOLDERS = {
    "animals": "animal",
    "buildings": "building",
    "food": "food",
    "plants": "plant",
    "people": "person",
    "people/smilies": "smiley",
    "people/clothing/hats": "hat",
    "people/clothing/jewelry": "accessory",
    "people/clothing/pantyhose": "legwear",
    "transportation": "vehicle",
    "transportation/roadsigns": "symbol",
    "transportation/aiga-symbols": "symbol",
    "signs_and_symbols": "symbol",
    "signs_and_symbols/flags": "flag",
    "signs_and_symbols/weather": "weather",
    "computer": "icon",
    "buttons": "icon",
    "shapes": "shape",
    "special": "shape",
    "recreation": "activity",
    "recreation/sports": "sport",
    "recreation/music": "instrument",
    "tools": "tool",
    "containers": "container",
    "geography": "map",
    "logos": "logo",
}
_CLIPART_CLOTHING_NAMES = (
    (("hat", "cap", "fedora", "crown", "sombrero", "turban", "tophat"), "hat"),
    (("sunglasses",), "eyewear"),
    (("earring", "chain", "ring", "rings"), "accessory"),
    (("mitten", "glove"), "gloves"),
    (("tie",), "necktie"),
    (("shorts",), "shorts"),
    (("shoe", "shoes", "boot", "sandals", "pattino", "thongs"), "shoe"),
    (("tote", "bag"), "bag"),
)


def clipart_concept(rel: str) -> str:
    """The folder taxonomy stands in for what a machine tagger would see in the drawing."""
    parts = rel.split("/")
    folders = parts[:-1]
    if folders[:2] == ["people", "clothing"] and len(folders) == 2:
        words = set(re.split(r"[^a-z]+", parts[-1].lower()))
        for names, concept in _CLIPART_CLOTHING_NAMES:
            if words & set(names):
                return concept
        return "garment"
    for depth in range(len(folders), 0, -1):
        concept = _CLIPART_FOLDERS.get("/".join(folders[:depth]))
        if concept:
            return concept
    return "unknown"


def clipart_caption(rel: str) -> str:
    """File name words, then the folder path leaf-first: the noisy alt-text a clip-art site shows."""
    parts = rel.split("/")
    stem = re.sub(r"\.png$", "", parts[-1], flags=re.IGNORECASE)
    words = [w for w in re.split(r"[_\s]+", stem) if w and not re.fullmatch(r"\d+|[a-z]?\d+[a-z]?", w)]
    folders = [p.replace("_", " ").replace("-", " ") for p in reversed(parts[:-1])]
    name = " ".join(words).strip(" -") or stem
    return f"{name}, {' '.join(folders)}" if folders else name


def list_clipart(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            if fn.lower().endswith(".png"):
                out.append(Path(dirpath, fn).relative_to(root).as_posix())
    return sorted(out)
