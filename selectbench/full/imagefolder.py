"""ImageFolder adapters: ImageNet train/val by wnid, and ImageNet-V2 / -R / -A / -Sketch."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from selectbench.core.errors import UserError
from selectbench.full.decode import IMAGE_EXTENSIONS, FileSource


class ImageFolderSource(FileSource):
    """root/<class folder>/<image> (recursing below the class folder, as torchvision does).

    class_index_from='name': the folder name is looked up in class_names (its position is the label);
    without class_names, folders are sorted and numbered 0..C-1. class_index_from='int': the folder
    name is the label (ImageNet-V2). A folder that cannot be mapped is a UserError: silently
    dropping a class, or giving it label -1, would skew every per-class metric downstream.

    folder_map (folder -> (label, class name)) overrides both: folders it leaves out are skipped on
    purpose (a variant's classes outside the run's class list) and their images counted in
    `skipped` (folder -> images).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        class_names: Sequence[str] | str | os.PathLike | None = None,
        *,
        class_index_from: Literal["name", "int"] = "name",
        name: str = "imagefolder",
        extensions: frozenset[str] = IMAGE_EXTENSIONS,
        folder_map: dict[str, tuple[int, str]] | None = None,
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
        self.skipped: dict[str, int] = {}
        if folder_map is not None:
            for f in [f for f in folders if f not in folder_map]:
                self.skipped[f] = len(_walk_images(self.root, f, extensions))
            folders = [f for f in folders if f in folder_map]
            label_of = {f: folder_map[f][0] for f in folders}
            if not folders:
                raise UserError(f"{self.root}: none of its class folders is one of the run's classes")
        elif class_index_from == "int":
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
                cls.append(folder_map[f][1] if folder_map is not None
                           else f if names is None or class_index_from == "name" else names[label_of[f]])
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


def published_wnids(which: str) -> list[str]:
    """ImageNet's 1,000 wnids in their sorted (class-index) order (`imagenet`), or the 200 of
    ImageNet-R / -A (`imagenet_r`, `imagenet_a`), as shipped with timm."""
    files = {"imagenet": "imagenet_synsets.txt", "imagenet_r": "imagenet_r_synsets.txt",
             "imagenet_a": "imagenet_a_synsets.txt"}
    text = (resources.files("timm.data") / "_info" / files[which]).read_text()
    return [ln.split()[0] for ln in text.splitlines() if ln.strip()]


def _run_positions(wnids) -> dict[str, int]:
    names = _read_class_list(wnids)
    return {w: i for i, w in enumerate(names)}


def _variant(root: Path, wnids, name: str, published: list[str], by_index: bool) -> ImageFolderSource:
    """A variant's folders mapped onto the run's classes. Its folders must be classes the variant
    publishes (by index into the sorted 1,000 for V2, by wnid otherwise); those outside the run's
    class list are skipped and counted, whatever the order or subset of classes.yaml."""
    pos = _run_positions(wnids)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found")
    with os.scandir(root) as it:
        folders = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    fmap, known = {}, set(published)
    for f in folders:
        if by_index:
            if not re.fullmatch(r"\d+", f) or int(f) >= len(published):
                raise UserError(f"{root / f}: {name} class folders are indexes 0..{len(published) - 1}, got {f!r}")
            w = published[int(f)]
        else:
            if f not in known:
                raise UserError(f"{root / f}: {f!r} is not one of {name}'s {len(published)} published classes")
            w = f
        if w in pos:
            fmap[f] = (pos[w], w)
    return ImageFolderSource(root, name=name, folder_map=fmap)


def imagenet_v2(root, wnids, variant: str = "matched-frequency") -> ImageFolderSource:
    """ImageNetV2 tarballs extract to imagenetv2-<variant>-format-val/<0..999>/<hash>.jpeg."""
    root = _descend(root, [f"imagenetv2-{variant}-format-val", f"imagenetv2-{variant}"])
    # V2's folder names index the sorted 1,000 ImageNet wnids, not the run's class list.
    return _variant(root, wnids, "imagenet_v2", published_wnids("imagenet"), by_index=True)


def imagenet_r(root, wnids) -> ImageFolderSource:
    """imagenet-r/<wnid>/<style>_<n>.jpg, 200 of the 1000 wnids (plus a README.txt)."""
    return _variant(_descend(root, ["imagenet-r"]), wnids, "imagenet_r", published_wnids("imagenet_r"), by_index=False)


def imagenet_a(root, wnids) -> ImageFolderSource:
    """imagenet-a/<wnid>/<name>.jpg, 200 of the 1000 wnids (plus a README.txt)."""
    return _variant(_descend(root, ["imagenet-a"]), wnids, "imagenet_a", published_wnids("imagenet_a"), by_index=False)


def imagenet_sketch(root, wnids) -> ImageFolderSource:
    """ImageNet-Sketch.zip extracts to sketch/<wnid>/<wnid>_<n>.JPEG, all 1000 wnids."""
    return _variant(_descend(root, ["sketch", "ImageNet-Sketch"]), wnids, "imagenet_sketch", published_wnids("imagenet"),
                    by_index=False)
