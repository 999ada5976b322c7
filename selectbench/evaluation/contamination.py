"""Contamination audit: near-copies of evaluation images inside a training shift.

Three detectors, each against one evaluation set at a time:
* exact - the same pixels (same shape and bytes);
* hash - a 64-bit difference hash (dHash: grey, area-resized to 8 x 9, one bit per horizontal
  gradient) within `hamming` bits. It ignores resolution and colour, so a 224 px RGB web image
  and a 28 px grey task image of one drawing match;
* cosine - image embeddings at cosine similarity above `cosine`.

The two thresholds come from a null that every evaluation set carries with it: how close its own
distinct items come to each other (each item's nearest *other* item of the set). Each threshold is
the tightest value at which at most `rate` of the set's items would flag a neighbour of their own
set, so a flagged training item is closer to an evaluation image than distinct evaluation images
are to each other, and the false-positive rate is stated, not tuned.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from selectbench.core.arrays import unit_rows
from selectbench.core.errors import UserError

HASH_BYTES = 8  # 64 bits


def dhash(images, batch: int = 4096) -> np.ndarray:
    """uint8 [N, 8]: the 64-bit difference hash of each uint8 image [N,H,W] or [N,H,W,3] (or any
    sliceable with len(), read one batch at a time)."""
    out = np.empty((len(images), HASH_BYTES), dtype=np.uint8)
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).float()
        if x.ndim == 4:  # RGB -> luma (ITU-R 601), as PIL's convert("L")
            x = x @ torch.tensor([0.299, 0.587, 0.114])
        if x.ndim != 3:
            raise UserError(f"dhash: expected images [N,H,W] or [N,H,W,3], got shape {tuple(x.shape)}")
        small = F.interpolate(x[:, None], size=(8, 9), mode="area")[:, 0]
        bits = (small[:, :, 1:] > small[:, :, :-1]).numpy()
        out[i:i + len(x)] = np.packbits(bits.reshape(len(x), 64), axis=1)
    return out


def digests(images, batch: int = 4096) -> np.ndarray:
    """One 16-byte digest of each image's shape and pixels (object array of bytes)."""
    out = np.empty(len(images), dtype=object)
    for i in range(0, len(images), batch):
        for j, im in enumerate(np.asarray(images[i:i + batch])):
            h = hashlib.blake2b(str(im.shape).encode(), digest_size=16)
            h.update(np.ascontiguousarray(im).tobytes())
            out[i + j] = h.digest()
    return out


@dataclass
class Fingerprints:
    """What the audit compares: per image its embedding (unit rows), dHash and pixel digest."""
    emb: np.ndarray
    hashes: np.ndarray
    digests: np.ndarray

    def __post_init__(self):
        if not len(self.emb) == len(self.hashes) == len(self.digests):
            raise ValueError("fingerprints of different lengths")
        self.emb = unit_rows(np.asarray(self.emb, dtype=np.float32)) if len(self.emb) else self.emb

    def __len__(self) -> int:
        return len(self.hashes)

    @classmethod
    def of(cls, images, emb) -> "Fingerprints":
        return cls(emb, dhash(images), digests(images))


def nearest(q: Fingerprints, ref: Fingerprints, batch: int = 8192, skip_self: bool = False) -> dict[str, np.ndarray]:
    """For each item of q, its nearest item of ref by cosine and by Hamming distance, and whether
    its pixels equal any item of ref: {cosine, cosine_item, hamming, hamming_item, exact, exact_item}.
    skip_self (q is ref): each item's nearest *other* item; `exact` is then all False."""
    import faiss

    n = len(q)
    if skip_self and len(ref) != n:
        raise ValueError("skip_self needs q to be ref")
    out = {"cosine": np.full(n, -np.inf, dtype=np.float32), "cosine_item": np.full(n, -1, dtype=np.int64),
           "hamming": np.full(n, 65, dtype=np.int64), "hamming_item": np.full(n, -1, dtype=np.int64),
           "exact": np.zeros(n, dtype=bool), "exact_item": np.full(n, -1, dtype=np.int64)}
    if n == 0 or len(ref) <= int(skip_self):
        return out
    ip = faiss.IndexFlatIP(ref.emb.shape[1])
    ip.add(np.ascontiguousarray(ref.emb, dtype=np.float32))
    binary = faiss.IndexBinaryFlat(8 * HASH_BYTES)
    binary.add(np.ascontiguousarray(ref.hashes))
    k = 2 if skip_self else 1
    for i in range(0, n, batch):
        own = np.arange(i, min(i + batch, n))[:, None]
        for index, x, key in ((ip, q.emb, "cosine"), (binary, q.hashes, "hamming")):
            d, j = index.search(np.ascontiguousarray(x[i:i + batch]), k)
            # With skip_self, the first hit that is not the item itself (a copy may rank first).
            col = (j[:, 0:1] == own).ravel().astype(np.int64) if skip_self else np.zeros(len(j), dtype=np.int64)
            out[key][i:i + batch] = d[np.arange(len(j)), col]
            out[f"{key}_item"][i:i + batch] = j[np.arange(len(j)), col]
    if skip_self:
        return out
    first = {}
    for k, dg in enumerate(ref.digests):
        first.setdefault(dg, k)
    hit = np.array([first.get(dg, -1) for dg in q.digests], dtype=np.int64)
    out["exact"], out["exact_item"] = hit >= 0, hit
    return out


@dataclass(frozen=True)
class Thresholds:
    cosine: float      # flag above this similarity
    hamming: int       # flag at or below this distance (-1: the hash flags nothing)
    null_items: int    # reference items the thresholds were drawn from
    rate: float

    def as_dict(self) -> dict:
        return {"cosine": self.cosine, "hamming": self.hamming, "null_items": self.null_items, "rate": self.rate}


def calibrate(null: dict[str, np.ndarray], rate: float) -> Thresholds:
    """Thresholds at which at most floor(rate * n) of n null items (each one's nearest distinct
    evaluation item, `nearest(..., skip_self=True)`) are flagged by each detector. With fewer
    than 2 evaluation items there is no null: both detectors are off (the exact one still works)."""
    if not 0.0 <= rate < 1.0:
        raise UserError(f"audit.null_rate: must be in [0, 1), got {rate}")
    cos, ham = np.asarray(null["cosine"], dtype=np.float64), np.asarray(null["hamming"])
    n = len(cos)
    if n < 2:
        return Thresholds(float("inf"), -1, 0, rate)
    allowed = int(np.floor(rate * n))
    # cosine: flag s > t, with t the (allowed+1)-th largest null value, so at most `allowed` exceed it.
    t_cos = float(np.sort(cos)[::-1][allowed])
    # hamming: flag d <= h, with h one below the (allowed+1)-th smallest null distance.
    t_ham = int(np.sort(ham)[allowed]) - 1
    return Thresholds(t_cos, t_ham, n, rate)


def flags(near: dict[str, np.ndarray], th: Thresholds) -> dict[str, np.ndarray]:
    """bool [N] per detector, and `any`."""
    f = {"exact": near["exact"], "hash": near["hamming"] <= th.hamming, "cosine": near["cosine"] > th.cosine}
    f["any"] = f["exact"] | f["hash"] | f["cosine"]
    return f
