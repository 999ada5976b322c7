"""The ImageNet-C analogue: 15 corruptions x 5 severities of the test set, built once by
the corrupt stage (kept apart from evaluation.py so that editing metrics never rebuilds it)."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np

# imagecorruptions draws most noise from numpy's global RNG (seeded per job below), but these two
# draw from a fresh, OS-seeded generator unless given `seed=`: impulse_noise through
# skimage.util.random_noise(seed=None), glass_blur through np.random.default_rng() and then numba's
# own RNG, which numpy's global seed does not reach. They made data/corrupted differ between runs.
_OWN_SEED = frozenset({"impulse_noise", "glass_blur"})


def _corrupt_chunk(args, seed: int = 0):
    from imagecorruptions import corrupt

    images, name, severity = args
    out = np.empty_like(images)
    for i, im in enumerate(images):
        kw = {"seed": (seed * 1_000_003 + i) % 2**32} if name in _OWN_SEED else {}
        if im.ndim == 3:  # RGB [H, W, 3] of at least 32 px: what the corruptions are made for
            out[i] = corrupt(im, corruption_name=name, severity=severity, **kw)
            continue
        # The corruptions assume RGB images of at least 32 px: pad 28 -> 32, grey -> RGB, and back.
        rgb = np.repeat(np.pad(im, 2)[..., None], 3, axis=2)
        y = np.asarray(corrupt(rgb, corruption_name=name, severity=severity, **kw), dtype=np.float32)
        out[i] = np.clip(y[2:30, 2:30].mean(axis=2).round(), 0, 255).astype(np.uint8)
    return out


def cell_rows(total: int, n: int, cells: int, seed: int) -> np.ndarray:
    """[cells, n] sorted test rows, one draw per corruption x severity cell: distinct across cells
    while the test set holds n x cells images (so cells are independent samples, as the interval
    over cells assumes), else an independent draw per cell."""
    rng = np.random.default_rng(seed)
    n = min(n, total)
    if n * cells <= total:
        rows = rng.permutation(total)[: n * cells].reshape(cells, n)
    else:
        rows = np.stack([rng.choice(total, size=n, replace=False) for _ in range(cells)])
    return np.sort(rows, axis=1)


def corrupted_set(images, labels: np.ndarray, n: int, seed: int, workers: int = 2):
    """The 15 ImageNet-C corruptions x 5 severities, each cell on its own n test images
    (`cell_rows`). Returns (images, labels, corruption, severity, names, test_rows), one entry
    per corrupted image.

    images: uint8 grey [N, 28, 28] or RGB [N, H, W, 3] (H, W >= 32), or an array-like that
    len() and indexing with a sorted int array (images[rows]) support: only those rows are read."""
    from imagecorruptions import get_corruption_names

    names = get_corruption_names()
    rows = cell_rows(len(images), n, len(names) * 5, seed)
    used = np.unique(rows)
    sub = np.asarray(images[used])
    at = np.searchsorted(used, rows)
    jobs = [(sub[at[c * 5 + s - 1]], name, s) for c, name in enumerate(names) for s in range(1, 6)]
    # corrupt() seeds numpy's global RNG nowhere, so fix it per job for repeatable noise (and pass
    # a per-image seed to the corruptions that ignore it, see _OWN_SEED).
    with ProcessPoolExecutor(max_workers=workers) as ex:
        outs = list(ex.map(_seeded_chunk, [(j, seed + i) for i, j in enumerate(jobs)]))
    per = rows.shape[1]
    cidx = np.repeat(np.arange(len(names)), 5 * per)
    sev = np.tile(np.repeat(np.arange(1, 6), per), len(names))
    pick = rows.reshape(-1)
    return np.concatenate(outs), labels[pick], cidx, sev, names, pick


def _seeded_chunk(job):
    args, seed = job
    np.random.seed(seed % 2**32)
    return _corrupt_chunk(args, seed)
