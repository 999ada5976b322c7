"""Web-style perturbations of pool images: affine, contrast, blur, inversion, JPEG re-encoding."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from selectbench.embedded.render import SIDE

# Perturbation magnitudes (the probabilities are params); see docs/simulation.md.
AFFINE_MAX_DEG = 15.0
AFFINE_SCALE = (0.85, 1.10)
AFFINE_MAX_SHIFT = 2.0
CONTRAST_GAMMA = (0.6, 1.6)
CONTRAST_GAIN = (0.7, 1.0)
BLUR_SIGMA = (0.5, 1.2)
JPEG_QUALITY = (20, 85)
PERTURBATIONS = ("affine", "contrast", "blur", "invert", "jpeg")


def perturb(images: np.ndarray, probs: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Web-style degradations, each applied independently with its probability."""
    n = len(images)
    applied = {k: rng.random(n) < probs[f"{k}_p"] for k in PERTURBATIONS}
    # Magnitudes are drawn for every image so that changing one probability does not shift the
    # random stream of the others.
    deg = rng.uniform(-AFFINE_MAX_DEG, AFFINE_MAX_DEG, n)
    scale = rng.uniform(*AFFINE_SCALE, n)
    shift = rng.uniform(-AFFINE_MAX_SHIFT, AFFINE_MAX_SHIFT, (n, 2))
    gamma = np.exp(rng.uniform(np.log(CONTRAST_GAMMA[0]), np.log(CONTRAST_GAMMA[1]), n))
    gain = rng.uniform(*CONTRAST_GAIN, n)
    sigma = rng.uniform(*BLUR_SIGMA, n)
    quality = rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, n)

    x = images.astype(np.float32)
    centre = np.array([(SIDE - 1) / 2.0] * 2)
    for i in np.flatnonzero(applied["affine"]):
        t = np.deg2rad(deg[i])
        fwd = scale[i] * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        inv = np.linalg.inv(fwd)
        offset = centre - inv @ (centre + shift[i])
        x[i] = ndimage.affine_transform(x[i], inv, offset=offset, order=1, mode="constant", cval=0.0)
    idx = applied["contrast"]
    if idx.any():
        x[idx] = 255.0 * (np.clip(x[idx], 0, 255) / 255.0) ** gamma[idx, None, None] * gain[idx, None, None]
    for i in np.flatnonzero(applied["blur"]):
        x[i] = ndimage.gaussian_filter(x[i], sigma=float(sigma[i]), mode="constant")
    idx = applied["invert"]
    x[idx] = 255.0 - np.clip(x[idx], 0, 255)
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    for i in np.flatnonzero(applied["jpeg"]):
        buf = io.BytesIO()
        Image.fromarray(out[i]).save(buf, format="JPEG", quality=int(quality[i]))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("L"), dtype=np.uint8)
    return out, {k: int(v.sum()) for k, v in applied.items()}
