"""Stable Diffusion pipelines from a local directory (full profile): txt2img, img2img, variations."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from selectbench.core.comm import LOCAL, Local
from selectbench.core.errors import UserError, fail
from selectbench.models.generator import _check_seed, _check_texts, _sha, _weights_sha
from selectbench.models.sampling import SAMPLERS, _gen, _run_batches

SD_MODES = ("txt2img", "img2img", "variation")


def load_sd_pipeline(model_id_or_dir: str | os.PathLike, mode: str = "txt2img", device: str | None = None,
                     dtype: torch.dtype | None = None):
    """StableDiffusion{,Img2Img,ImageVariation}Pipeline from a local directory or a hub id.

    fp16 on GPU, fp32 on CPU unless dtype is given; the safety checker is off (it would black out
    training images, and SELECT's generated shifts were not filtered by it).
    """
    import diffusers

    classes = {"txt2img": diffusers.StableDiffusionPipeline,
               "img2img": diffusers.StableDiffusionImg2ImgPipeline,
               "variation": diffusers.StableDiffusionImageVariationPipeline}
    if mode not in classes:
        raise fail("mode", f"unknown value {mode!r}; allowed: {', '.join(SD_MODES)}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    local = Path(model_id_or_dir).is_dir()
    try:
        pipe = classes[mode].from_pretrained(str(model_id_or_dir), dtype=dtype, safety_checker=None,
                                             requires_safety_checker=False, local_files_only=local)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load a {mode} Stable Diffusion pipeline from {model_id_or_dir}: {first}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _sd_mode(pipe) -> str:
    import diffusers

    if isinstance(pipe, diffusers.StableDiffusionImageVariationPipeline):
        return "variation"
    if isinstance(pipe, diffusers.StableDiffusionImg2ImgPipeline):
        return "img2img"
    if isinstance(pipe, diffusers.StableDiffusionPipeline):
        return "txt2img"
    raise fail("pipe", f"unsupported pipeline {type(pipe).__name__}")


def _to_rgb_pil(img, size: int):
    from PIL import Image

    if not isinstance(img, Image.Image):
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise fail("inputs", f"images must be PIL or uint8 [H, W] / [H, W, 3], got {arr.dtype} {arr.shape}")
        img = Image.fromarray(arr)
    img = img.convert("RGB")
    return img if img.size == (size, size) else img.resize((size, size), Image.Resampling.BICUBIC)


def generate_sd(pipe, inputs, *, seed: int, steps: int, guidance: float, size: int, batch_size: int,
                scheduler: str = "unipc", prompts: Sequence[str] | None = None, strength: float = 0.75,
                progress: bool = True, resume_dir: str | os.PathLike | None = None, shard_size: int | None = None,
                comm: Local = LOCAL):
    """Run a pipeline from load_sd_pipeline over all inputs -> uint8 RGB images [N, size, size, 3]
    (with resume_dir: a view of the shards written there, see sampling._run_batches).

    inputs: prompts (txt2img) or images (img2img, variation; PIL or uint8 arrays); img2img also
    takes `prompts`, one per image. Item i is seeded by (seed, i) through a CPU generator, so
    results do not depend on batching or on the device's RNG; finished shards persist in
    resume_dir.
    """
    from diffusers import DDIMScheduler, UniPCMultistepScheduler

    mode = _sd_mode(pipe)
    seed = _check_seed(seed)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise fail("steps", f"must be an int >= 1, got {steps!r}")
    if scheduler not in SAMPLERS:
        raise fail("scheduler", f"unknown value {scheduler!r}; allowed: {', '.join(SAMPLERS)}")
    if not isinstance(size, int) or size < 8 or size % 8:
        raise fail("size", f"must be a multiple of 8, got {size!r}")
    if mode == "txt2img":
        prompts = _check_texts(inputs, None, "inputs")
        images = None
    else:
        # A sliceable sequence (a lazy Subset of ImageNet rows) stays lazy: batches are read as needed.
        images = inputs if hasattr(inputs, "__getitem__") and hasattr(inputs, "__len__") else list(inputs)
        if not len(images):
            raise fail("inputs", "is empty")
        if mode == "img2img":
            prompts = _check_texts(prompts if prompts is not None else [], len(images), "prompts")
        elif prompts is not None:
            raise fail("prompts", "the image-variation pipeline takes no prompts")
    cls = UniPCMultistepScheduler if scheduler == "unipc" else DDIMScheduler
    if not isinstance(pipe.scheduler, cls):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
    n = len(prompts) if images is None else len(images)

    def make(start: int, end: int) -> np.ndarray:
        gens = [_gen(seed, "sd", i) for i in range(start, end)]
        common = dict(num_inference_steps=steps, guidance_scale=float(guidance), generator=gens, output_type="np")
        if mode == "txt2img":
            out = pipe(prompt=prompts[start:end], height=size, width=size, **common)
        elif mode == "img2img":
            out = pipe(prompt=prompts[start:end], image=[_to_rgb_pil(im, size) for im in images[start:end]],
                       strength=float(strength), **common)
        else:
            out = pipe(image=[_to_rgb_pil(im, size) for im in images[start:end]], height=size, width=size,
                       **common)
        arr = np.asarray(out.images, dtype=np.float32)
        return (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)

    fp = None
    if resume_dir is not None:
        if images is None:
            inputs_sha = _sha(prompts)
        else:
            h = hashlib.sha256()  # streamed: the inputs may not fit in memory
            for s in range(0, n, 256):
                for im in images[s:s + 256]:
                    h.update(np.asarray(_to_rgb_pil(im, size)).tobytes())
            inputs_sha = h.hexdigest()
        fp = {"kind": f"sd-{mode}", "model": str(pipe.config.get("_name_or_path", "")), "seed": seed,
              "steps": steps, "guidance": float(guidance), "size": size, "batch_size": batch_size,
              "scheduler": scheduler, "strength": float(strength) if mode == "img2img" else None,
              "inputs": inputs_sha, "prompts": _sha(prompts) if prompts is not None else None,
              "unet": _weights_sha(pipe.unet)}
    return _run_batches(n, batch_size, make, resume_dir=resume_dir, fingerprint=fp or {}, progress=progress,
                        desc=f"sd-{mode}", shard_size=shard_size, comm=comm)
