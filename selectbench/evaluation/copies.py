"""The near-copy diagnostic of an image-conditioned shift: is a generated image closer to the image
it was conditioned on than to another base image of its class? SDEdit at moderate strength returns
near-copies of its input; SELECT's image variations start from pure noise and should not."""
from __future__ import annotations

import numpy as np

CHUNK = 1024


def rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image root-mean-square pixel difference (0-255 scale) of two equally shaped stacks."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.sqrt((d.reshape(len(d), -1) ** 2).mean(axis=1))


def near_copy(generated: np.ndarray, base: np.ndarray, condition: np.ndarray, labels: np.ndarray,
              base_labels: np.ndarray, seed: int) -> dict:
    """Median RMS of each generated image to its own conditioning image (`condition`: rows of
    `base`) and to a seeded random other base image of the same class. Classes with one base
    image have no other image and are left out; `nan` medians when nothing is left."""
    rng = np.random.default_rng(seed)
    other = np.full(len(condition), -1, dtype=np.int64)
    for c in np.unique(labels):
        pool = np.flatnonzero(base_labels == c)
        mine = np.flatnonzero(labels == c)
        if len(pool) < 2:
            continue
        pick = pool[rng.integers(0, len(pool), size=len(mine))]
        clash = pick == condition[mine]  # never the image's own conditioning image
        while clash.any():
            pick[clash] = pool[rng.integers(0, len(pool), size=int(clash.sum()))]
            clash = pick == condition[mine]
        other[mine] = pick
    ok = other >= 0
    if not ok.any():
        return {"rms_own": float("nan"), "rms_same_class": float("nan"), "items": 0}
    items = np.flatnonzero(ok)
    own, same = np.empty(len(items)), np.empty(len(items))
    for s in range(0, len(items), CHUNK):  # generated shards and the base set may not fit in memory
        i = items[s:s + CHUNK]
        gen = generated[i]
        own[s:s + CHUNK] = rms(gen, base[condition[i]])
        same[s:s + CHUNK] = rms(gen, base[other[i]])
    return {"rms_own": float(np.median(own)), "rms_same_class": float(np.median(same)), "items": int(ok.sum())}
