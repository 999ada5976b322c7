"""VTAB-1k transfer tasks of the full profile: readers for the datasets' published on-disk layouts.

SELECT measures transfer on 11 "VTAB-inspired" tasks. The 11 here are the VTAB-1k natural and
specialized groups (Zhai et al. 2019): Caltech101, CIFAR-100, DTD, Flowers102, Oxford-IIIT Pets,
SVHN, SUN397 (natural); Patch Camelyon, EuroSAT, RESISC45, Diabetic Retinopathy (specialized).
The structured group (CLEVR, dSprites, SmallNORB, KITTI, DMLab) is left out: its labels are counts,
positions and angles that tfds derives from renderer metadata, not a layout one can read.

``open_task(name, root, seed=...)`` returns a :class:`VtabSplits` whose ``train`` and ``test`` are
``selectbench.sources.Source`` objects (``meta()`` with a ``label`` column, ``load(rows)`` yielding
PIL images). ``root`` may be the dataset folder itself or the folder its archive was extracted
into. Mistakes in the layout (missing folders or files, unknown classes, bad labels) raise a
one-line ``UserError``; an image that exists but cannot be decoded is yielded as ``None`` and
counted in ``errors``, as every other source does.

Formats (what each reader expects; ``LAYOUTS`` holds the same as one line each):

* Caltech101 ``101_ObjectCategories/<class>/image_NNNN.jpg``; ``BACKGROUND_Google`` is not a class
  (torchvision's convention). No official split: ``train_per_class`` (30, the tfds/VTAB split)
  images per class are drawn with ``seed``, the rest is the test split.
* CIFAR-100 ``cifar-100-python/{train,test,meta}``: the official Python pickles (``data`` uint8
  N x 3072 in CHW order, ``fine_labels``; ``meta`` ``fine_label_names``). Pickles can run code when
  loaded: only read a copy from the official archive.
* DTD ``dtd/images/<class>/*.jpg`` + ``dtd/labels/{train,val,test}<k>.txt`` (``class/file.jpg``
  per line); train = train + val of partition ``k`` (1), as in VTAB.
* Flowers102 ``jpg/image_NNNNN.jpg`` + ``imagelabels.mat`` (``labels``, 1..102) + ``setid.mat``
  (``trnid``, ``valid``, ``tstid``, 1-based image numbers); train = trnid + valid, as in VTAB.
* Oxford-IIIT Pets ``images/<Breed>_<n>.jpg`` + ``annotations/{trainval,test}.txt``
  (``<Breed>_<n> <class 1..37> <species> <breed id>``).
* SVHN ``{train,test}_32x32.mat`` (format 2: ``X`` 32 x 32 x 3 x N, ``y`` N x 1 with 10 for digit 0).
* SUN397 ``SUN397/<l>/<class>[/<sub>]/*.jpg`` + ``ClassName.txt`` + ``Partitions/{Training,Testing}_<kk>.txt``
  (``/a/abbey/sun_x.jpg`` per line), partition ``k`` (1).
* Patch Camelyon: the official release is HDF5 (``camelyonpatch_level_2_split_*_{x,y}.h5``); h5py
  is not a dependency here and an HDF5 file cannot be written faithfully in a test without it, so
  the reader takes the ImageFolder layout torchvision-style exports use instead:
  ``{train,test}/{0,1}/*.png`` (0 = no tumour, 1 = tumour).
* EuroSAT (RGB) ``2750/<Class>/<Class>_<n>.jpg`` (or ``EuroSAT_RGB/``), and RESISC45
  ``NWPU-RESISC45/<class>/<class>_NNN.jpg``: no official split; a seeded class-stratified
  ``test_fraction`` (0.2, the share of tfds/VTAB's test split) is held out.
* Diabetic Retinopathy (Kaggle) ``train/<image>.jpeg`` + ``trainLabels.csv`` (``image,level``) and
  ``test/<image>.jpeg`` + ``retinopathy_solution.csv`` (``image,level,Usage``), levels 0..4."""
from __future__ import annotations

import csv
import os
from collections import Counter

import numpy as np

from selectbench.core.errors import UserError
from selectbench.core.splits import split_rng
from selectbench.full.decode import to_array
from selectbench.full.imagefolder import ImageFolderSource
from selectbench.full.vtab_io import (
    STRATIFIED_TEST_FRACTION,
    ArraySource,
    FileListSource,
    SubsetSource,
    VtabSplits,
    _check_listed,
    _class_folders,
    _err,
    _loadmat,
    _mat_vector,
    _need_dir,
    _need_file,
    _root,
    _split_folder,
    _unpickle,
)

CALTECH_TRAIN_PER_CLASS = 30
# VTAB-1k: 1,000 training examples per task (800 train + 200 val in VTAB; here one seeded draw).
VTAB_1K_TRAIN = 1000
RETINOPATHY_LEVELS = ["no DR", "mild", "moderate", "severe", "proliferative DR"]


def caltech101(root, *, seed: int = 0, train_per_class: int = CALTECH_TRAIN_PER_CLASS) -> VtabSplits:
    name = "caltech101"
    base = _root(name, root, ["caltech101/101_ObjectCategories", "101_ObjectCategories"])
    src, classes = _class_folders(name, base, frozenset({"BACKGROUND_Google"}))
    labels = src.meta()["label"].to_numpy()
    rng = split_rng(seed, f"{name}.split")
    train, test = [], []
    for c, cls in enumerate(classes):
        members = np.flatnonzero(labels == c)
        if len(members) <= train_per_class:
            raise _err(name, base / cls, f"{len(members)} images; the split needs more than {train_per_class}")
        members = members[rng.permutation(len(members))]
        train.append(members[:train_per_class])
        test.append(members[train_per_class:])
    tr, te = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    return VtabSplits(name, classes, SubsetSource(f"{name}_train", src, tr), SubsetSource(f"{name}_test", src, te))


def cifar100(root, *, seed: int = 0) -> VtabSplits:
    name = "cifar100"
    base = _root(name, root, ["cifar-100-python"])
    meta = _unpickle(name, _need_file(name, base / "meta"))
    if "fine_label_names" not in meta:
        raise _err(name, base / "meta", "lacks fine_label_names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta["fine_label_names"]]
    out = {}
    for split in ("train", "test"):
        path = _need_file(name, base / split)
        d = _unpickle(name, path)
        if "data" not in d or "fine_labels" not in d:
            raise _err(name, path, "lacks data or fine_labels")
        data = np.asarray(d["data"])
        labels = np.asarray(d["fine_labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise _err(name, path, f"data must be uint8 N x 3072 with N labels, got {data.dtype} {data.shape}, {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise _err(name, path, f"fine label outside 0..{len(classes) - 1}")
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        out[split] = ArraySource(f"{name}_{split}", images, labels, classes)
    return VtabSplits(name, classes, out["train"], out["test"])


def dtd(root, *, seed: int = 0, partition: int = 1) -> VtabSplits:
    name = "dtd"
    base = _root(name, root, ["dtd"])
    images = _need_dir(name, base / "images")
    classes = sorted(e.name for e in os.scandir(images) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise _err(name, images, "no class folders")
    pos = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, files in (("train", ("train", "val")), ("test", ("test",))):
        paths, labels = [], []
        for f in files:
            path = _need_file(name, base / "labels" / f"{f}{partition}.txt")
            for i, ln in enumerate(path.read_text().splitlines(), start=1):
                ln = ln.strip()
                if not ln:
                    continue
                cls = ln.split("/", 1)[0]
                if "/" not in ln or cls not in pos:
                    raise _err(name, f"{path}:{i}", f"{ln!r} is not <class folder>/<file>")
                paths.append(f"images/{ln}")
                labels.append(pos[cls])
        _check_listed(name, base, paths)
        splits[split] = FileListSource(f"{name}_{split}", base, paths, labels, classes)
    return VtabSplits(name, classes, splits["train"], splits["test"])


def flowers102(root, *, seed: int = 0) -> VtabSplits:
    name = "flowers102"
    base = _root(name, root, ["flowers-102", "flowers102"])
    jpg = _need_dir(name, base / "jpg")
    lpath, spath = _need_file(name, base / "imagelabels.mat"), _need_file(name, base / "setid.mat")
    labels = _mat_vector(name, lpath, _loadmat(name, lpath), "labels")
    if not len(labels) or labels.min() < 1:
        raise _err(name, lpath, "labels must be 1-based class numbers")
    classes = [str(i) for i in range(1, int(labels.max()) + 1)]
    setid = _loadmat(name, spath)
    ids = {k: _mat_vector(name, spath, setid, k) for k in ("trnid", "valid", "tstid")}
    out = {}
    for split, keys in (("train", ("trnid", "valid")), ("test", ("tstid",))):
        nums = np.concatenate([ids[k] for k in keys])
        if len(nums) and (nums.min() < 1 or nums.max() > len(labels)):
            raise _err(name, spath, f"image number outside 1..{len(labels)}")
        paths = [f"{jpg.name}/image_{n:05d}.jpg" for n in nums]
        _check_listed(name, base, paths)
        out[split] = FileListSource(f"{name}_{split}", base, paths, labels[nums - 1] - 1, classes)
    return VtabSplits(name, classes, out["train"], out["test"])


def pets(root, *, seed: int = 0) -> VtabSplits:
    name = "pets"
    base = _root(name, root, ["oxford-iiit-pet"])
    _need_dir(name, base / "images")
    rows = {}
    names: dict[int, str] = {}
    for split, fname in (("train", "trainval.txt"), ("test", "test.txt")):
        path = _need_file(name, base / "annotations" / fname)
        items = []
        for i, ln in enumerate(path.read_text().splitlines(), start=1):
            if not ln.strip() or ln.startswith("#"):
                continue
            parts = ln.split()
            if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) < 1:
                raise _err(name, f"{path}:{i}", f"{ln!r} is not '<image> <class 1..37> <species> <breed>'")
            cid, breed = int(parts[1]), parts[0].rsplit("_", 1)[0]
            if names.setdefault(cid, breed) != breed:
                raise _err(name, f"{path}:{i}", f"class {cid} is both {names[cid]!r} and {breed!r}")
            items.append((f"images/{parts[0]}.jpg", cid - 1))
        rows[split] = items
    n = max(names)
    if sorted(names) != list(range(1, n + 1)):
        raise _err(name, base / "annotations", f"class ids are not 1..{n}")
    classes = [names[i] for i in range(1, n + 1)]
    out = {}
    for split, items in rows.items():
        paths = [p for p, _ in items]
        _check_listed(name, base, paths)
        out[split] = FileListSource(f"{name}_{split}", base, paths, [c for _, c in items], classes)
    return VtabSplits(name, classes, out["train"], out["test"])


def svhn(root, *, seed: int = 0) -> VtabSplits:
    name = "svhn"
    base = _root(name, root, ["svhn"])
    classes = [str(d) for d in range(10)]
    out = {}
    for split in ("train", "test"):
        path = _need_file(name, base / f"{split}_32x32.mat")
        mat = _loadmat(name, path)
        if "X" not in mat or "y" not in mat:
            raise _err(name, path, "lacks X or y")
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise _err(name, path, f"X must be uint8 32x32x3xN with N labels, got {x.dtype} {x.shape}, {len(y)} labels")
        if len(y) and (y.min() < 1 or y.max() > 10):
            raise _err(name, path, "y must be 1..10 (10 = digit 0)")
        out[split] = ArraySource(f"{name}_{split}", x.transpose(3, 0, 1, 2), y % 10, classes)
    return VtabSplits(name, classes, out["train"], out["test"])


def sun397(root, *, seed: int = 0, partition: int = 1) -> VtabSplits:
    name = "sun397"
    base = _root(name, root, ["SUN397"])
    parts = base / "Partitions" if (base / "Partitions").is_dir() else base
    cpath = base / "ClassName.txt" if (base / "ClassName.txt").is_file() else _need_file(name, parts / "ClassName.txt")
    classes = [ln.strip() for ln in cpath.read_text().splitlines() if ln.strip()]
    pos = {c: i for i, c in enumerate(classes)}
    out = {}
    for split, stem in (("train", "Training"), ("test", "Testing")):
        path = _need_file(name, parts / f"{stem}_{partition:02d}.txt")
        paths, labels = [], []
        for i, ln in enumerate(path.read_text().splitlines(), start=1):
            ln = ln.strip()
            if not ln:
                continue
            cls = ln.rsplit("/", 1)[0]
            if cls not in pos:
                raise _err(name, f"{path}:{i}", f"{ln!r}: class {cls!r} is not in {cpath.name}")
            paths.append(ln.lstrip("/"))
            labels.append(pos[cls])
        _check_listed(name, base, paths)
        out[split] = FileListSource(f"{name}_{split}", base, paths, labels, classes)
    return VtabSplits(name, classes, out["train"], out["test"])


def pcam(root, *, seed: int = 0) -> VtabSplits:
    name = "pcam"
    base = _root(name, root, ["pcam"])
    classes = ["no tumour", "tumour"]
    out = {}
    for split in ("train", "test"):
        d = _need_dir(name, base / split)
        extra = sorted(e.name for e in os.scandir(d) if e.is_dir() and e.name not in ("0", "1") and not e.name.startswith("."))
        if extra:
            raise _err(name, d / extra[0], "class folder must be 0 (no tumour) or 1 (tumour)")
        try:
            src = ImageFolderSource(d, classes, class_index_from="int", name=f"{name}_{split}")
        except UserError as e:
            raise _err(name, d, str(e).split(": ", 1)[-1]) from None
        out[split] = src
    return VtabSplits(name, classes, out["train"], out["test"])


def eurosat(root, *, seed: int = 0, test_fraction: float = STRATIFIED_TEST_FRACTION) -> VtabSplits:
    name = "eurosat"
    return _split_folder(name, _class_folders(name, _root(name, root, ["2750", "EuroSAT_RGB", "EuroSAT"])), seed, test_fraction)


def resisc45(root, *, seed: int = 0, test_fraction: float = STRATIFIED_TEST_FRACTION) -> VtabSplits:
    name = "resisc45"
    return _split_folder(name, _class_folders(name, _root(name, root, ["NWPU-RESISC45"])), seed, test_fraction)


def retinopathy(root, *, seed: int = 0) -> VtabSplits:
    name = "retinopathy"
    base = _root(name, root, ["diabetic-retinopathy-detection", "retinopathy"])
    classes = list(RETINOPATHY_LEVELS)
    out = {}
    for split, csv_name in (("train", "trainLabels.csv"), ("test", "retinopathy_solution.csv")):
        folder = _need_dir(name, base / split)
        path = _need_file(name, base / csv_name)
        paths, labels = [], []
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", "level"} <= set(reader.fieldnames):
                raise _err(name, path, f"header must name image,level; got {reader.fieldnames}")
            for i, row in enumerate(reader, start=2):
                lv = (row["level"] or "").strip()
                if not lv.isdigit() or int(lv) >= len(classes):
                    raise _err(name, f"{path}:{i}", f"level {lv!r} is not 0..{len(classes) - 1}")
                paths.append(f"{folder.name}/{row['image'].strip()}.jpeg")
                labels.append(int(lv))
        if not paths:
            raise _err(name, path, "lists no images")
        _check_listed(name, base, paths)
        out[split] = FileListSource(f"{name}_{split}", base, paths, labels, classes)
    return VtabSplits(name, classes, out["train"], out["test"])


READERS = {
    "caltech101": caltech101,
    "cifar100": cifar100,
    "dtd": dtd,
    "flowers102": flowers102,
    "pets": pets,
    "svhn": svhn,
    "sun397": sun397,
    "pcam": pcam,
    "eurosat": eurosat,
    "resisc45": resisc45,
    "retinopathy": retinopathy,
}


def open_task(name: str, root, *, seed: int = 0) -> VtabSplits:
    """The train/test splits of VTAB task `name` read from `root`."""
    if name not in READERS:
        raise UserError(f"unknown VTAB task {name!r}; known: {', '.join(READERS)}")
    return READERS[name](root, seed=seed)


def to_task_arrays(
    splits: VtabSplits, size: int, *, mode: str = "L", train_max: int | None, test_max: int | None, seed: int
) -> tuple[dict[str, np.ndarray], dict]:
    """Seeded subsets of each split (None = all), decoded to uint8 [N, size, size] for mode "L"
    or [N, size, size, 3] for "RGB" (centre crop, see sources.to_array); items that fail to
    decode are dropped and counted."""

    arrays, info = {}, {"decode_errors": {}}
    for split, src, cap in (("train", splits.train, train_max), ("test", splits.test, test_max)):
        labels = src.meta()["label"].to_numpy()
        rows = np.arange(len(labels))
        if cap is not None and len(rows) > cap:
            rows = np.sort(split_rng(seed, f"{splits.name}.{split}.subset").choice(len(rows), size=cap, replace=False))
        xs, ys = [], []
        before = Counter(src.errors)
        for r, img in src.load(rows, draft_size=size):
            if img is None:
                continue
            xs.append(to_array(img, size, mode, fit="crop"))
            ys.append(labels[r])
        if not xs:
            raise UserError(f"vtab {splits.name}: no decodable {split} images")
        arrays[f"{split}_x"] = np.stack(xs).astype(np.uint8)
        arrays[f"{split}_y"] = np.asarray(ys, dtype=np.int64)
        info["decode_errors"][split] = dict(Counter(src.errors) - before)
    return arrays, info
