"""The base task's data: Fashion-MNIST from Debian's package or its canonical URL, checksum-verified."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from selectbench.core.errors import UserError, fail
from selectbench.core.io import read_npz
from selectbench.embedded.render import SIDE

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# sha256 of the *decompressed* IDX bytes: Debian recompresses the archives, so the .gz hashes
# differ between mirrors while the data are identical.
SHA256 = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def _verified(key: str, path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256[key]:
        raise UserError(f"{path}: checksum mismatch (sha256 {digest[:12]}..., expected {SHA256[key][:12]}...)")
    return parse_idx(raw, str(path))


def fetch(source_dir: str | None, url: str, cache_dir: Path, timeout: float = 60.0) -> dict[str, np.ndarray]:
    """Read the four files from source_dir when it holds them, else download from url into cache_dir."""
    out = {}
    for key, fname in FILES.items():
        local = Path(source_dir) / fname if source_dir else None
        if local is not None and local.exists():
            out[key] = _verified(key, local)
            continue
        cache_dir.mkdir(parents=True, exist_ok=True)
        target = cache_dir / fname
        if not target.exists():
            src = url.rstrip("/") + "/" + fname
            try:
                with urllib.request.urlopen(src, timeout=timeout) as r, tempfile.NamedTemporaryFile(
                    dir=cache_dir, delete=False
                ) as tmp:
                    shutil.copyfileobj(r, tmp)
            except OSError as e:
                raise UserError(f"data.url: cannot download {src} ({e}); install Debian's "
                                f"dataset-fashion-mnist or set data.source_dir") from None
            Path(tmp.name).replace(target)
        try:
            out[key] = _verified(key, target)
        except UserError:
            target.unlink()  # a corrupt download must not poison the next attempt
            raise
    return out


def split_parts(labels: np.ndarray, base_reserve: int, seed: int) -> np.ndarray:
    """part[i] = 0 for rows reserved to base-derived shifts, 1 for rows the web pool may use.

    Stratified so both parts keep the class balance; a fixed function of (labels, reserve, seed).
    """
    if not 0 < base_reserve < len(labels):
        raise UserError(f"data.base_reserve: must be in (0, {len(labels)}), got {base_reserve}")
    rng = np.random.default_rng(seed)
    part = np.ones(len(labels), dtype=np.int8)
    classes = np.unique(labels)
    per = np.full(len(classes), base_reserve // len(classes))
    per[: base_reserve - per.sum()] += 1
    for c, n in zip(classes, per):
        rows = np.flatnonzero(labels == c)
        part[rng.permutation(rows)[:n]] = 0
    return part


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


def load_train(path: str | os.PathLike) -> dict[str, np.ndarray]:
    train = read_npz(path, "train file")
    check_train(train, str(path))
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


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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
