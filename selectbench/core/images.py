"""Where a stage reads pixels: array files in the embedded profile, source adapters in the full one.

Each image set is either an array file written by an earlier stage (data/raw/<split>.npz 'images',
data/pool/images.npy, data/natural/images.npy), a generated shift's shards (data/curated/<shift>/generated,
selectbench.core.genshards) or, in the full
profile, a pointer file beside it (`<set>.images.json`) naming a selectbench.sources adapter and
the square size and mode every image is decoded to. ImageNet at 224 px would be a 190 GB array and
a LAION pool cannot be materialised at all, so a pointer is the only contract that scales.

`open_images` returns an array-like either way: len(x), x[i], x[a:b], x[int array] -> uint8
[N, H, W] (grey) or [N, H, W, 3]. An adapter image that cannot be decoded comes back black and is
recorded in `failed` (row -> reason); `take` also returns which rows decoded, for stages that must
drop, not train on, a broken file."""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np

from selectbench.core.errors import UserError
from selectbench.core.genshards import GeneratedImages
from selectbench.core.layout import IMAGE_SETS, generated


def is_lazy(images) -> bool:
    """True for a full-profile adapter view (selectbench.full.pointer.LazyImages), which can fail per row."""
    return hasattr(images, "take") and hasattr(images, "failed")


def from_pointer(path: str | os.PathLike):
    """The adapter view behind a pointer file. Imported by name: pointers exist only in the full
    profile, so the embedded profile's stages do not depend on (or rerun for) adapter code; the
    pointer itself records a hash of that code, which reruns the full profile's readers instead."""
    return importlib.import_module("selectbench.full.pointer").from_pointer(path)


def base_name(root: str | os.PathLike = ".") -> str:
    """The base task's name in sample ids: `fmnist` (embedded), else the train pointer's part
    (`imagenet`), so that ids say where an item came from."""
    pointer = Path(root) / IMAGE_SETS["train"][1]
    if pointer.exists():
        return next(iter(json.loads(pointer.read_text())["parts"]))
    return "fmnist"


def open_images(name: str, root: str | os.PathLike = ".", curated_dir: str | os.PathLike | None = None):
    """The image set `name` (train, test, pool, natural, or generated for curated_dir)."""
    root = Path(root)
    if name == "generated":
        if curated_dir is None:
            raise ValueError("generated images need curated_dir")
        return GeneratedImages(generated(curated_dir))
    if name not in IMAGE_SETS:
        raise UserError(f"unknown image set {name!r}; known: {', '.join(IMAGE_SETS)}, generated")
    array_file, pointer = (root / p for p in IMAGE_SETS[name])
    if array_file.suffix == ".npz" and array_file.exists():
        with np.load(array_file) as z:
            if "images" in z.files:
                return z["images"]
    elif array_file.exists():
        return np.load(array_file, mmap_mode="r")
    if pointer.exists():
        return from_pointer(pointer)
    raise UserError(f"no images for {name!r}: neither {array_file} nor {pointer} (run the earlier stages first)")


class Subset:
    """Rows `rows` of an image set, still lazy (for encoders that slice their input batch by batch)."""

    def __init__(self, images, rows):
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        return take(self.images, self.rows[key])[0]


def take(images, rows) -> tuple[np.ndarray, np.ndarray]:
    """(images[rows], ok) for an array or a LazyImages; arrays always decode."""
    if is_lazy(images):
        return images.take(rows)
    rows = np.asarray(rows, dtype=np.int64)
    return np.asarray(images[rows]), np.ones(len(rows), dtype=bool)
