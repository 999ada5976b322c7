"""Synthetic shifts: a small text-conditioned pixel diffusion model (embedded profile) and
Stable Diffusion pipelines (full profile), both with per-item seeding and batch-level resume.

Embedded profile: 28x28 grayscale images are padded to a 32x32 canvas (background value) and
folded 2x2 into 4 channels at 16x16 (space-to-depth, lossless), so a diffusers
UNet2DConditionModel runs at a quarter of the spatial cost; conditioning is the token-level
hidden states of a text encoder passed in as `encode_prompts(list[str]) -> [B, L, W]`, or, for
image variations (SELECT's SD img2img), an image's CLIP embedding through a learned projection,
as the Stable Diffusion image-variations model conditions on its CLIP image embedding."""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from selectbench.core.errors import UserError, fail
from selectbench.core.io import read_json, write_json
from selectbench.core.runtime import derive_seed

FORMAT = "selectbench-generator"
FORMAT_VERSION = 2
IMAGE_SIZE = 28
CANVAS = 32
PAD = (CANVAS - IMAGE_SIZE) // 2
# Sized for 2 CPU cores: three levels at 16/8/4 px after the 2x2 fold, cross-attention only at the
# two coarse levels; 1.7M parameters. One thread: ~0.41 s per training step at batch 64 and ~480
# UNet evaluations per second when sampling (a guided step costs two).
DEFAULT_UNET = {
    "patch": 2,
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": 4,
}
# v-prediction keeps the x0 estimate bounded at the top of the cosine schedule, where an
# epsilon model's x0 = (x - sqrt(1-a) eps) / sqrt(a) blows up (alpha_bar ~ 0 at t = T-1).
NOISE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}
_DERIVED_KEYS = ("sample_size", "in_channels", "out_channels", "cross_attention_dim")
# Above this, a caption-embedding table would cost more memory than re-encoding each batch.
_TABLE_BYTES = 256 << 20


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype.str, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, torch.Tensor):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(p, (list, tuple)) and all(isinstance(s, str) for s in p):
            h.update(json.dumps(list(p)).encode())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def _weights_sha(module: torch.nn.Module) -> str:
    return _sha(*[t for _, t in sorted(module.state_dict().items())])


def tune_cpu_allocator() -> None:
    """Keep freed memory in the process instead of returning it to the OS.

    glibc unmaps large freed blocks and trims the heap; every training step then re-faults its
    activation buffers, which in a small VM made steps 2-10x slower and very erratic. Process-wide
    and idempotent; a no-op off glibc.
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)
    libc.mallopt(m_top_pad, 64 << 20)


class Generator(torch.nn.Module):
    """A UNet2DConditionModel on the folded canvas plus what sampling needs to know about it."""

    def __init__(self, unet, config: dict, image_proj: torch.nn.Linear | None = None):
        super().__init__()
        self.unet = unet
        self.config = dict(config)
        self.image_proj = image_proj

    @property
    def patch(self) -> int:
        return int(self.config["patch"])

    @property
    def cond_dim(self) -> int:
        return int(self.config["cond_dim"])

    def image_tokens(self, emb: torch.Tensor, length: int) -> torch.Tensor:
        """Image embeddings [B, D] -> a condition [B, length, W] of one token repeated: attention
        over identical keys equals attention over that one token, and the text's shape is kept so
        text and image conditions share a batch."""
        if self.image_proj is None:
            raise fail("generator", "was trained without image conditioning (config image_dim is null)")
        if emb.ndim != 2 or emb.shape[1] != self.image_proj.in_features:
            raise fail("image_emb", f"expected [N, {self.image_proj.in_features}], got {tuple(emb.shape)}")
        return self.image_proj(emb)[:, None, :].expand(-1, length, -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: [B, 1, 32, 32] canvas in [-1, 1]; returns the model output on the same canvas."""
        p = self.patch
        h = F.pixel_unshuffle(x, p) if p > 1 else x
        out = self.unet(h, t, encoder_hidden_states=cond, return_dict=False)[0]
        return F.pixel_shuffle(out, p) if p > 1 else out


def _unet_kwargs(cond_dim: int, unet_cfg: dict | None) -> tuple[int, dict]:
    cfg = {**DEFAULT_UNET, **(unet_cfg or {})}
    for k in _DERIVED_KEYS:
        if k in cfg:
            raise fail(f"unet_cfg.{k}", "is derived (canvas 32 / patch, 1 channel, the text width); remove it")
    patch = cfg.pop("patch")
    if not isinstance(patch, int) or isinstance(patch, bool) or patch not in (1, 2, 4):
        raise fail("unet_cfg.patch", f"must be 1, 2 or 4, got {patch!r}")
    levels = len(cfg["block_out_channels"])
    if (CANVAS // patch) % (2 ** (levels - 1)):
        raise fail("unet_cfg.block_out_channels", f"{levels} levels do not fit a {CANVAS // patch} px grid")
    kw = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "sample_size": CANVAS // patch,
        "in_channels": patch * patch,
        "out_channels": patch * patch,
        "cross_attention_dim": int(cond_dim),
    }
    return patch, kw


def build_generator(cond_dim: int, unet_cfg: dict | None = None, *, image_dim: int | None = None,
                    seed: int = 0) -> Generator:
    from diffusers import UNet2DConditionModel

    if not isinstance(cond_dim, int) or cond_dim < 1:
        raise fail("cond_dim", f"must be a positive int, got {cond_dim!r}")
    if image_dim is not None and (not isinstance(image_dim, int) or image_dim < 1):
        raise fail("image_dim", f"must be a positive int or None, got {image_dim!r}")
    patch, kw = _unet_kwargs(cond_dim, unet_cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", 0))
        try:
            unet = UNet2DConditionModel(**kw)
        except (TypeError, ValueError, RuntimeError) as e:
            raise fail("unet_cfg", f"diffusers rejected the UNet config: {e}") from None
        proj = torch.nn.Linear(image_dim, cond_dim) if image_dim is not None else None
    config = {"format": FORMAT, "version": FORMAT_VERSION, "image_size": IMAGE_SIZE, "canvas": CANVAS,
              "patch": patch, "cond_dim": int(cond_dim), "image_dim": image_dim, "noise": dict(NOISE)}
    return Generator(unet, config, proj)


def save_generator(model: Generator, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.unet.save_pretrained(out / "unet", safe_serialization=True)
    if model.image_proj is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.image_proj.state_dict().items()}, out / "image_proj.safetensors")
    write_json(out / "config.json", model.config)
    return out


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    from diffusers import UNet2DConditionModel

    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.exists() or not (path / "unet").is_dir():
        raise UserError(f"{path}: not a saved generator (needs config.json and unet/)")
    config = read_json(cfg_path)
    if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
        raise UserError(f"{cfg_path}: format {config.get('format')!r} v{config.get('version')!r}, "
                        f"expected {FORMAT!r} v{FORMAT_VERSION}")
    # low_cpu_mem_usage needs `accelerate`, which is not a dependency; this model is small.
    unet = UNet2DConditionModel.from_pretrained(path / "unet", use_safetensors=True, low_cpu_mem_usage=False)
    proj = None
    if config.get("image_dim") is not None:
        from safetensors.torch import load_file

        proj = torch.nn.Linear(int(config["image_dim"]), int(config["cond_dim"]))
        proj.load_state_dict(load_file(path / "image_proj.safetensors"))
    return Generator(unet, config, proj).to(device).eval()


def _check_images(images, key: str = "images") -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3 \
            or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
        raise fail(key, f"expected uint8 array [N, {IMAGE_SIZE}, {IMAGE_SIZE}], got {got}")
    if len(images) == 0:
        raise fail(key, "is empty")
    return images


def _check_texts(texts, n: int | None, key: str) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise fail(key, "expected a list of strings")
    texts = list(texts)
    if n is not None and len(texts) != n:
        raise fail(key, f"has {len(texts)} entries for {n} images")
    if not texts:
        raise fail(key, "is empty")
    return texts


def _check_seed(seed) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise fail("seed", f"must be a non-negative int, got {seed!r}")
    return int(seed)


def _to_canvas(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> uint8 [N, 1, 32, 32], padded with 0 (the background)."""
    return F.pad(torch.from_numpy(np.ascontiguousarray(images)), (PAD, PAD, PAD, PAD)).unsqueeze(1)


def _to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.float().div_(127.5).sub_(1.0)


def _from_canvas(x: torch.Tensor) -> np.ndarray:
    x = x[:, 0, PAD:PAD + IMAGE_SIZE, PAD:PAD + IMAGE_SIZE]
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def _encode(encode_prompts, texts: list[str], cond_dim: int, device) -> torch.Tensor:
    with torch.no_grad():
        e = encode_prompts(list(texts))
    if not isinstance(e, torch.Tensor) or e.ndim != 3 or e.shape[0] != len(texts) or e.shape[2] != cond_dim:
        got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
        raise fail("encode_prompts", f"must return a float tensor [{len(texts)}, L, {cond_dim}], got {got}")
    return e.detach().to(device=device, dtype=torch.float32)
