"""The base task's data: Fashion-MNIST from Debian's package or its canonical URL, checksum-verified."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from .common import UserError
from .sources import parse_idx

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


def load_split(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
