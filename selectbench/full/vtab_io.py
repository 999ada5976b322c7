"""Shared pieces of the VTAB readers: file-list, array and subset sources, layout checks, folder splits."""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from selectbench.core.errors import UserError
from selectbench.core.splits import split_rng, stratified_split
from selectbench.full.decode import IMAGE_EXTENSIONS, FileSource, Source, _check_rows, _ErrorLog
from selectbench.full.imagefolder import _descend, _walk_images

STRATIFIED_TEST_FRACTION = 0.2


@dataclass
class VtabSplits:
    name: str
    classes: list[str]
    train: Source
    test: Source


def _err(name: str, where, msg: str) -> UserError:
    return UserError(f"vtab {name}: {where}: {msg}")


class FileListSource(FileSource):
    """Image files (paths relative to root) with integer labels."""

    def __init__(self, name: str, root: Path, paths: Sequence[str], labels: Sequence[int], classes: Sequence[str]):
        self.name = name
        self.root = Path(root)
        self._init_errors()
        labels = np.asarray(labels, dtype=np.int64)
        self._meta = pd.DataFrame(
            {
                "sample_id": [f"{name}:{p}" for p in paths],
                "label": labels,
                "path": list(paths),
                "class_name": [classes[i] for i in labels],
            }
        )


class ArraySource(_ErrorLog):
    """Images already decoded into a uint8 array [N, H, W, 3] (CIFAR, SVHN)."""

    def __init__(self, name: str, images: np.ndarray, labels: Sequence[int], classes: Sequence[str]):
        self.name = name
        self._init_errors()
        self.images = images
        labels = np.asarray(labels, dtype=np.int64)
        self._meta = pd.DataFrame(
            {
                "sample_id": [f"{name}:{i}" for i in range(len(labels))],
                "label": labels,
                "class_name": [classes[i] for i in labels],
            }
        )

    def __len__(self) -> int:
        return len(self._meta)

    def meta(self) -> pd.DataFrame:
        return self._meta.copy()

    def load(self, rows: Sequence[int], **_) -> Iterator[tuple[int, Image.Image | None]]:
        for r in _check_rows(rows, len(self)):
            yield int(r), Image.fromarray(np.ascontiguousarray(self.images[int(r)]))


class SubsetSource:
    """Rows of another source (a split carved out of a folder tree that has no official one)."""

    def __init__(self, name: str, base, rows: np.ndarray):
        self.name = name
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def errors(self):
        return self.base.errors

    def __len__(self) -> int:
        return len(self.rows)

    def meta(self) -> pd.DataFrame:
        return self.base.meta().iloc[self.rows].reset_index(drop=True)

    def load(self, rows: Sequence[int], **kw) -> Iterator[tuple[int, Image.Image | None]]:
        r = _check_rows(rows, len(self))
        back = {int(b): int(a) for a, b in zip(r, self.rows[r])}
        for b, img in self.base.load(self.rows[r], **kw):
            yield back[b], img


def _root(name: str, root, candidates: Sequence[str]) -> Path:
    r = Path(root)
    if not r.is_dir():
        raise _err(name, r, f"dataset folder not found (expected {LAYOUTS[name]})")
    return _descend(r, candidates)


def _need_file(name: str, path: Path) -> Path:
    if not path.is_file():
        raise _err(name, path, f"file not found (expected {LAYOUTS[name]})")
    return path


def _need_dir(name: str, path: Path) -> Path:
    if not path.is_dir():
        raise _err(name, path, f"folder not found (expected {LAYOUTS[name]})")
    return path


def _check_listed(name: str, root: Path, paths: Sequence[str]) -> None:
    for p in paths:
        if not (root / p).is_file():
            raise _err(name, root / p, "listed in the split file but missing")


def _class_folders(name: str, root: Path, exclude: frozenset = frozenset()) -> tuple[FileListSource, list[str]]:
    """root/<class>/<image> (recursing, as torchvision's ImageFolder); folders sorted and numbered."""
    try:
        folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".") and e.name not in exclude)
    except OSError as e:
        raise _err(name, root, f"cannot list ({e.strerror})") from None
    if not folders:
        raise _err(name, root, f"no class folders (expected {LAYOUTS[name]})")
    paths, labels = [], []
    for i, f in enumerate(folders):
        found = _walk_images(root, f, IMAGE_EXTENSIONS)
        if not found:
            raise _err(name, root / f, "class folder holds no images")
        paths += found
        labels += [i] * len(found)
    return FileListSource(name, root, paths, labels, folders), folders


def _split_folder(name: str, found: tuple[FileListSource, list[str]], seed: int, test_fraction: float) -> VtabSplits:
    src, classes = found
    tr, te = stratified_split(src.meta()["label"].to_numpy(), test_fraction, split_rng(seed, f"{name}.split"))
    return VtabSplits(name, classes, SubsetSource(f"{name}_train", src, tr), SubsetSource(f"{name}_test", src, te))


def _unpickle(name: str, path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise _err(name, path, f"not a CIFAR pickle ({type(e).__name__})") from None
    if not isinstance(d, dict):
        raise _err(name, path, "not a CIFAR pickle (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _loadmat(name: str, path: Path) -> dict:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return loadmat(path)
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as e:
        raise _err(name, path, f"not a MATLAB v5 .mat file ({e})") from None


def _mat_vector(name: str, path: Path, mat: dict, key: str) -> np.ndarray:
    if key not in mat:
        raise _err(name, path, f"lacks variable {key!r}")
    return np.asarray(mat[key]).reshape(-1).astype(np.int64)


LAYOUTS = {
    "caltech101": "101_ObjectCategories/<class>/*.jpg",
    "cifar100": "cifar-100-python/{train,test,meta}",
    "dtd": "dtd/images/<class>/*.jpg and dtd/labels/{train,val,test}<k>.txt",
    "flowers102": "jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat",
    "pets": "images/<Breed>_<n>.jpg and annotations/{trainval,test}.txt",
    "svhn": "{train,test}_32x32.mat",
    "sun397": "SUN397/<l>/<class>/*.jpg, ClassName.txt, Partitions/{Training,Testing}_<kk>.txt",
    "pcam": "{train,test}/{0,1}/*.png (ImageFolder export of the HDF5 release)",
    "eurosat": "2750/<Class>/*.jpg",
    "resisc45": "NWPU-RESISC45/<class>/*.jpg",
    "retinopathy": "train/*.jpeg, trainLabels.csv, test/*.jpeg, retinopathy_solution.csv",
}
