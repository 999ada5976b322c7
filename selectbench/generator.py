"""Synthetic shifts: a small text-conditioned pixel diffusion model (embedded profile) and
Stable Diffusion pipelines (full profile), both with per-item seeding and batch-level resume.

Embedded profile: 28x28 grayscale images are padded to a 32x32 canvas (background value) and
folded 2x2 into 4 channels at 16x16 (space-to-depth, lossless), so a diffusers
UNet2DConditionModel runs at a quarter of the spatial cost; conditioning is the token-level
hidden states of a text encoder passed in as `encode_prompts(list[str]) -> [B, L, W]`.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selectbench.common import UserError, atomic_save_npy, fail, flush_denormal, read_json, write_json

FORMAT = "selectbench-generator"
FORMAT_VERSION = 1
IMAGE_SIZE = 28
CANVAS = 32
PAD = (CANVAS - IMAGE_SIZE) // 2
SAMPLERS = ("ddim", "unipc")

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


# --------------------------------------------------------------------------------------------
# seeding and hashing


def _derive(seed: int, tag: str, index: int) -> int:
    """A 63-bit seed for (seed, tag, index): independent streams that need no saved state."""
    words = [int(seed), int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "little"), int(index)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


def _gen(seed: int, tag: str, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(_derive(seed, tag, index))


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


# --------------------------------------------------------------------------------------------
# model


class Generator(torch.nn.Module):
    """A UNet2DConditionModel on the folded canvas plus what sampling needs to know about it."""

    def __init__(self, unet, config: dict):
        super().__init__()
        self.unet = unet
        self.config = dict(config)

    @property
    def patch(self) -> int:
        return int(self.config["patch"])

    @property
    def cond_dim(self) -> int:
        return int(self.config["cond_dim"])

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


def build_generator(cond_dim: int, unet_cfg: dict | None = None, *, seed: int = 0) -> Generator:
    from diffusers import UNet2DConditionModel

    if not isinstance(cond_dim, int) or cond_dim < 1:
        raise fail("cond_dim", f"must be a positive int, got {cond_dim!r}")
    patch, kw = _unet_kwargs(cond_dim, unet_cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_derive(seed, "init", 0))
        try:
            unet = UNet2DConditionModel(**kw)
        except (TypeError, ValueError, RuntimeError) as e:
            raise fail("unet_cfg", f"diffusers rejected the UNet config: {e}") from None
    config = {"format": FORMAT, "version": FORMAT_VERSION, "image_size": IMAGE_SIZE, "canvas": CANVAS,
              "patch": patch, "cond_dim": int(cond_dim), "noise": dict(NOISE)}
    return Generator(unet, config)


def save_generator(model: Generator, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.unet.save_pretrained(out / "unet", safe_serialization=True)
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
    return Generator(unet, config).to(device).eval()


def _noise_scheduler(model: Generator, kind: str):
    from diffusers import DDIMScheduler, DDPMScheduler, UniPCMultistepScheduler

    noise = model.config["noise"]
    if kind == "ddpm":
        return DDPMScheduler(**noise)
    if kind == "ddim":
        # "trailing" starts sampling at t = T-1 (pure noise); "leading" would start below it.
        # No x0 clipping: with guidance it desynchronises x0 from the implied noise and drifts
        # samples bright (measured: 48% vs 95% of samples recognised by a real-data classifier).
        return DDIMScheduler(**noise, clip_sample=False, timestep_spacing="trailing")
    if kind == "unipc":
        return UniPCMultistepScheduler(**noise, timestep_spacing="trailing")
    raise fail("scheduler", f"unknown value {kind!r}; allowed: {', '.join(SAMPLERS)}")


# --------------------------------------------------------------------------------------------
# inputs


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


# --------------------------------------------------------------------------------------------
# training


def _lr_at(step: int, steps: int, lr: float) -> float:
    warm = max(1, min(200, steps // 10))
    if step < warm:
        return float(lr) * (step + 1) / warm
    # Cosine to 10% of the peak: a short run ends on small, averaging updates.
    frac = (step - warm) / max(1, steps - warm)
    # Python float: optimizer state is reloaded with weights_only=True, which refuses numpy scalars.
    return float(lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac))))


class _Batches:
    """Index i of the whole sample stream -> image index, one fresh permutation per epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._epoch, self._perm = n, seed, -1, None

    def take(self, start: int, count: int) -> torch.Tensor:
        out = []
        for pos in range(start, start + count):
            epoch, k = divmod(pos, self.n)
            if epoch != self._epoch:
                self._perm = torch.randperm(self.n, generator=_gen(self.seed, "epoch", epoch))
                self._epoch = epoch
            out.append(self._perm[k])
        return torch.stack(out)


_CKPT_RE = re.compile(r"^step-(\d{9})$")


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(p for p in ckpt_dir.glob("step-*") if _CKPT_RE.match(p.name) and p.is_dir()) \
        if ckpt_dir.is_dir() else []
    return found[-1] if found else None


def _save_checkpoint(ckpt_dir: Path, step: int, model: Generator, opt, fingerprint: str) -> None:
    from safetensors.torch import save_file

    final = ckpt_dir / f"step-{step:09d}"
    if final.exists():
        return
    tmp = ckpt_dir / f".tmp-step-{step:09d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.unet.state_dict().items()}, str(tmp / "unet.safetensors"))
    torch.save({"optimizer": opt.state_dict(), "step": step, "fingerprint": fingerprint,
                "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")
    os.replace(tmp, final)
    for old in ckpt_dir.glob("step-*"):
        if old != final and _CKPT_RE.match(old.name):
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(path: Path, model: Generator, opt, fingerprint: str) -> int | None:
    from safetensors.torch import load_file

    state = torch.load(path / "trainer.pt", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        print(f"generator: ignoring checkpoint {path} from another configuration", file=sys.stderr)
        return None
    model.unet.load_state_dict(load_file(str(path / "unet.safetensors")), strict=True)
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def train_generator(images: np.ndarray, captions: Sequence[str], encode_prompts: Callable, cond_dim: int, *,
                    steps: int, batch_size: int, lr: float, seed: int, p_uncond: float = 0.1,
                    unet_cfg: dict | None = None, log: Callable[[int, float], None] | None = None,
                    ckpt_dir: str | os.PathLike | None = None, ckpt_every: int = 0,
                    device: str | torch.device = "cpu") -> Generator:
    """Train the embedded generator; bitwise reproducible on CPU for a seed, and resumable.

    Every random draw of step s comes from a generator seeded by (seed, s), and the data order
    from one permutation per epoch seeded by (seed, epoch), so a run resumed from a checkpoint
    (weights, AdamW state, step, torch RNG) ends with the same weights as an uninterrupted one.
    `log(step, loss)` gets the 0-based index of the step just taken.
    """
    images = _check_images(images)
    captions = _check_texts(captions, len(images), "captions")
    seed = _check_seed(seed)
    for key, val, lo in (("steps", steps, 1), ("batch_size", batch_size, 1), ("ckpt_every", ckpt_every, 0)):
        if not isinstance(val, int) or isinstance(val, bool) or val < lo:
            raise fail(key, f"must be an int >= {lo}, got {val!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise fail("lr", f"must be > 0, got {lr!r}")
    if not (isinstance(p_uncond, (int, float)) and 0 <= p_uncond <= 1):
        raise fail("p_uncond", f"must be in [0, 1], got {p_uncond!r}")
    tune_cpu_allocator()
    flush_denormal()
    device = torch.device(device)

    model = build_generator(cond_dim, unet_cfg, seed=seed).to(device).train()
    noise_sched = _noise_scheduler(model, "ddpm")
    n_train_t = int(model.config["noise"]["num_train_timesteps"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    uncond = _encode(encode_prompts, [""], cond_dim, device)
    uniq = sorted(set(captions))
    table_bytes = len(uniq) * uncond.shape[1] * cond_dim * 4
    fingerprint = _sha({"seed": seed, "steps": steps, "batch_size": batch_size, "lr": float(lr),
                        "p_uncond": float(p_uncond), "config": model.config,
                        # Private diffusers keys left out: `_use_default_values` lists a set in the
                        # process's string-hash order, so no checkpoint matched in a new process.
                        "unet": {k: v for k, v in model.unet.config.items() if not k.startswith("_")}},
                       images, captions, _encode(encode_prompts, ["", uniq[0]], cond_dim, "cpu"))

    start = 0
    ckpt_path = Path(ckpt_dir) if ckpt_dir is not None else None
    if ckpt_path is not None and (latest := _latest_checkpoint(ckpt_path)) is not None:
        start = _load_checkpoint(latest, model, opt, fingerprint) or 0
        if start:
            print(f"generator: resuming from step {start} ({latest})", file=sys.stderr)

    table = None
    # A table pays off only when training would encode more captions than it holds.
    if table_bytes <= _TABLE_BYTES and len(uniq) < steps * batch_size:
        # Encoded in a fixed order and chunking, so the table is the same on every (re)start.
        parts = [_encode(encode_prompts, uniq[i:i + 256], cond_dim, device) for i in range(0, len(uniq), 256)]
        table = torch.cat(parts)
        where = {c: i for i, c in enumerate(uniq)}
        cap_idx = torch.tensor([where[c] for c in captions])
    canvas = _to_canvas(images)
    batches = _Batches(len(images), seed)

    for step in range(start, steps):
        g = _gen(seed, "step", step)
        idx = batches.take(step * batch_size, batch_size)
        x0 = _to_unit(canvas[idx]).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, n_train_t, (batch_size,), generator=g).to(device)
        drop = (torch.rand(batch_size, generator=g) < p_uncond).to(device)
        if table is not None:
            cond = table[cap_idx[idx].to(device)]
        else:
            cond = _encode(encode_prompts, [captions[int(i)] for i in idx], cond_dim, device)
        cond = torch.where(drop[:, None, None], uncond.expand_as(cond), cond)

        xt = noise_sched.add_noise(x0, noise, t)
        target = noise_sched.get_velocity(x0, noise, t)
        loss = F.mse_loss(model(xt, t, cond), target)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

        done = step + 1
        # Saved before log() so a failure raised from logging never loses the step.
        if ckpt_path is not None and ((ckpt_every and done % ckpt_every == 0) or done == steps):
            _save_checkpoint(ckpt_path, done, model, opt, fingerprint)
        if log is not None:
            log(step, float(loss.detach()))
    return model.eval()


# --------------------------------------------------------------------------------------------
# batched, resumable generation


def _run_batches(n: int, batch_size: int, make: Callable[[int, int], np.ndarray], *, resume_dir,
                 fingerprint: dict, progress: bool, desc: str) -> list[np.ndarray]:
    """make(start, end) -> array for items [start, end); finished batches persist in resume_dir."""
    from tqdm.auto import tqdm

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise fail("batch_size", f"must be an int >= 1, got {batch_size!r}")
    rdir = Path(resume_dir) if resume_dir is not None else None
    if rdir is not None:
        rdir.mkdir(parents=True, exist_ok=True)
        manifest = rdir / "manifest.json"
        digest = _sha(fingerprint)
        if not manifest.exists() or read_json(manifest).get("digest") != digest:
            # Batches from another request (other weights, prompts, seed...) must not be reused.
            for old in rdir.glob("items-*.npy"):
                old.unlink()
            write_json(manifest, {"digest": digest, "n": n, "batch_size": batch_size})
    out = []
    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            end = min(n, start + batch_size)
            path = rdir / f"items-{start:08d}-{end:08d}.npy" if rdir is not None else None
            arr = None
            if path is not None and path.exists():
                try:
                    arr = np.load(path)
                except (OSError, ValueError):
                    arr = None
                if arr is not None and len(arr) != end - start:
                    arr = None
            if arr is None:
                arr = make(start, end)
                if path is not None:
                    atomic_save_npy(path, arr)
            out.append(arr)
            bar.update(end - start)
    return out


def _denoise(model: Generator, encode_prompts, prompts: list[str], init: np.ndarray | None, *, seed: int,
             steps: int, guidance: float, scheduler: str, strength: float, batch_size: int, progress: bool,
             resume_dir, device) -> np.ndarray:
    if scheduler not in SAMPLERS:
        raise fail("scheduler", f"unknown value {scheduler!r}; allowed: {', '.join(SAMPLERS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise fail("steps", f"must be an int >= 1, got {steps!r}")
    if not isinstance(guidance, (int, float)) or guidance < 0:
        raise fail("guidance", f"must be >= 0, got {guidance!r}")
    tune_cpu_allocator()
    flush_denormal()
    device = torch.device(device)
    model = model.to(device).eval()
    cond_dim = model.cond_dim
    use_cfg = guidance > 1.0
    uncond = _encode(encode_prompts, [""], cond_dim, device)
    canvas = _to_canvas(init) if init is not None else None
    order = _noise_scheduler(model, scheduler).order

    def make(start: int, end: int) -> np.ndarray:
        b = end - start
        sched = _noise_scheduler(model, scheduler)
        sched.set_timesteps(steps)
        timesteps = sched.timesteps
        # Item i's noise depends only on (seed, i): independent of batching and of resumes.
        noise = torch.cat([torch.randn((1, 1, CANVAS, CANVAS), generator=_gen(seed, "noise", i))
                           for i in range(start, end)]).to(device)
        if canvas is None:
            x = noise * sched.init_noise_sigma
        else:
            # SDEdit: jump to `strength` of the sampling schedule and denoise from there.
            n_run = min(int(steps * strength), steps)
            x0 = _to_unit(canvas[start:end]).to(device)
            if n_run == 0:
                return _from_canvas(x0)
            t_start = steps - n_run
            timesteps = timesteps[t_start * order:]
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(t_start * order)
            x = sched.add_noise(x0, noise, timesteps[:1].repeat(b))
        cond = _encode(encode_prompts, prompts[start:end], cond_dim, device)
        if cond.shape[1] != uncond.shape[1]:
            raise fail("encode_prompts", f"returned {cond.shape[1]} tokens for prompts, {uncond.shape[1]} for ''")
        emb = torch.cat([uncond.expand_as(cond), cond]) if use_cfg else cond
        with torch.inference_mode():
            for t in timesteps:
                inp = sched.scale_model_input(torch.cat([x, x]) if use_cfg else x, t)
                out = model(inp, t.expand(inp.shape[0]).to(device), emb)
                if use_cfg:
                    out_u, out_c = out.chunk(2)
                    out = out_u + guidance * (out_c - out_u)
                x = sched.step(out, t, x, return_dict=False)[0]
        return _from_canvas(x)

    kind = "img2img" if init is not None else "txt2img"
    fp = {}
    if resume_dir is not None:
        fp = {"kind": kind, "seed": seed, "steps": steps, "guidance": float(guidance), "scheduler": scheduler,
              "batch_size": batch_size, "strength": float(strength) if init is not None else None,
              "config": model.config, "weights": _weights_sha(model.unet), "prompts": _sha(prompts),
              "images": _sha(init) if init is not None else None,
              "encoder": _sha(_encode(encode_prompts, ["", prompts[0]], cond_dim, "cpu"))}
    parts = _run_batches(len(prompts), batch_size, make, resume_dir=resume_dir, fingerprint=fp,
                         progress=progress, desc=kind)
    return np.concatenate(parts)


def txt2img(model: Generator, encode_prompts: Callable, prompts: Sequence[str], *, seed: int, steps: int = 20,
            guidance: float = 3.0, scheduler: str = "ddim", batch_size: int = 256, progress: bool = True,
            resume_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> np.ndarray:
    """One image per prompt -> uint8 [N, 28, 28]; item i is seeded by (seed, i)."""
    prompts = _check_texts(prompts, None, "prompts")
    return _denoise(model, encode_prompts, prompts, None, seed=_check_seed(seed), steps=steps, guidance=guidance,
                    scheduler=scheduler, strength=1.0, batch_size=batch_size, progress=progress,
                    resume_dir=resume_dir, device=device)


def img2img(model: Generator, encode_prompts: Callable, images: np.ndarray, prompts: Sequence[str], *,
            seed: int, strength: float = 0.6, steps: int = 20, guidance: float = 3.0, scheduler: str = "ddim",
            batch_size: int = 256, progress: bool = True, resume_dir: str | os.PathLike | None = None,
            device: str | torch.device = "cpu") -> np.ndarray:
    """SDEdit: noise image i to `strength` of the schedule, denoise it with prompt i -> uint8 [N, 28, 28].

    strength 0 returns the inputs; strength 1 ignores them (pure txt2img from other noise).
    """
    images = _check_images(images)
    prompts = _check_texts(prompts, len(images), "prompts")
    if not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise fail("strength", f"must be in [0, 1], got {strength!r}")
    return _denoise(model, encode_prompts, prompts, images, seed=_check_seed(seed), steps=steps,
                    guidance=guidance, scheduler=scheduler, strength=float(strength), batch_size=batch_size,
                    progress=progress, resume_dir=resume_dir, device=device)


# --------------------------------------------------------------------------------------------
# full profile: Stable Diffusion

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
                progress: bool = True, resume_dir: str | os.PathLike | None = None) -> list:
    """Run a pipeline from load_sd_pipeline over all inputs -> list of RGB PIL images (size x size).

    inputs: prompts (txt2img) or images (img2img, variation; PIL or uint8 arrays); img2img also
    takes `prompts`, one per image. Item i is seeded by (seed, i) through a CPU generator, so
    results do not depend on batching or on the device's RNG; finished batches persist in
    resume_dir as uint8 .npy.
    """
    from diffusers import DDIMScheduler, UniPCMultistepScheduler
    from PIL import Image

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
        images = list(inputs)
        if not images:
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
            inputs_sha = _sha(*[np.asarray(_to_rgb_pil(im, size)) for im in images])
        fp = {"kind": f"sd-{mode}", "model": str(pipe.config.get("_name_or_path", "")), "seed": seed,
              "steps": steps, "guidance": float(guidance), "size": size, "batch_size": batch_size,
              "scheduler": scheduler, "strength": float(strength) if mode == "img2img" else None,
              "inputs": inputs_sha, "prompts": _sha(prompts) if prompts is not None else None,
              "unet": _weights_sha(pipe.unet)}
    parts = _run_batches(n, batch_size, make, resume_dir=resume_dir, fingerprint=fp or {}, progress=progress,
                         desc=f"sd-{mode}")
    return [Image.fromarray(a) for part in parts for a in part]
