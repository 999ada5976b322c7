"""Training the small diffusion model on pool images and captions, resumable from checkpoints."""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from selectbench.core.errors import fail
from selectbench.core.runtime import flush_denormal
from selectbench.models import checkpoint
from selectbench.models.generator import (
    _TABLE_BYTES,
    Generator,
    _check_images,
    _check_seed,
    _check_texts,
    _encode,
    _sha,
    _to_canvas,
    _to_unit,
    build_generator,
    tune_cpu_allocator,
)
from selectbench.models.sampling import _gen, _noise_scheduler


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


def train_generator(images: np.ndarray, captions: Sequence[str], encode_prompts: Callable, cond_dim: int, *,
                    steps: int, batch_size: int, lr: float, seed: int, p_uncond: float = 0.1,
                    image_emb: np.ndarray | None = None, p_image: float = 0.0,
                    unet_cfg: dict | None = None, log: Callable[[int, float], None] | None = None,
                    ckpt_dir: str | os.PathLike | None = None, ckpt_every: int = 0,
                    device: str | torch.device = "cpu") -> Generator:
    """Train the embedded generator; bitwise reproducible on CPU for a seed, and resumable.

    Every random draw of step s comes from a generator seeded by (seed, s), and the data order
    from one permutation per epoch seeded by (seed, epoch), so a run resumed from a checkpoint
    (weights, AdamW state, step, torch RNG) ends with the same weights as an uninterrupted one.
    `log(step, loss)` gets the 0-based index of the step just taken.

    image_emb [N, D]: each image's CLIP embedding; with it, an item is conditioned on its own image
    embedding (through the model's learned projection) instead of its caption with probability
    p_image, so one model serves text-to-image and image variations. p_uncond then drops either.
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
    if not (isinstance(p_image, (int, float)) and 0 <= p_image <= 1):
        raise fail("p_image", f"must be in [0, 1], got {p_image!r}")
    if image_emb is not None:
        if not isinstance(image_emb, np.ndarray) or image_emb.ndim != 2 or len(image_emb) != len(images):
            got = getattr(image_emb, "shape", type(image_emb).__name__)
            raise fail("image_emb", f"expected a float array [{len(images)}, D], got {got}")
        if not np.isfinite(image_emb).all():
            raise fail("image_emb", "has non-finite values")
    elif p_image > 0:
        raise fail("p_image", "is above 0 but no image embeddings were given")
    tune_cpu_allocator()
    flush_denormal()
    device = torch.device(device)

    image_dim = int(image_emb.shape[1]) if image_emb is not None else None
    model = build_generator(cond_dim, unet_cfg, image_dim=image_dim, seed=seed).to(device).train()
    noise_sched = _noise_scheduler(model, "ddpm")
    n_train_t = int(model.config["noise"]["num_train_timesteps"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    uncond = _encode(encode_prompts, [""], cond_dim, device)
    uniq = sorted(set(captions))
    table_bytes = len(uniq) * uncond.shape[1] * cond_dim * 4
    fingerprint = _sha({"seed": seed, "steps": steps, "batch_size": batch_size, "lr": float(lr),
                        "p_uncond": float(p_uncond), "p_image": float(p_image), "config": model.config,
                        # Private diffusers keys left out: `_use_default_values` lists a set in the
                        # process's string-hash order, so no checkpoint matched in a new process.
                        "unet": {k: v for k, v in model.unet.config.items() if not k.startswith("_")}},
                       images, captions, _encode(encode_prompts, ["", uniq[0]], cond_dim, "cpu"),
                       image_emb if image_emb is not None else "no image embeddings")

    start = 0
    state = checkpoint.load(ckpt_dir, fingerprint, "generator") if ckpt_dir is not None else None
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        print(f"generator: resuming from step {start} ({checkpoint.path(ckpt_dir)})", file=sys.stderr)

    table = None
    # A table pays off only when training would encode more captions than it holds.
    if table_bytes <= _TABLE_BYTES and len(uniq) < steps * batch_size:
        # Encoded in a fixed order and chunking, so the table is the same on every (re)start.
        parts = [_encode(encode_prompts, uniq[i:i + 256], cond_dim, device) for i in range(0, len(uniq), 256)]
        table = torch.cat(parts)
        where = {c: i for i, c in enumerate(uniq)}
        cap_idx = torch.tensor([where[c] for c in captions])
    canvas = _to_canvas(images)
    img_emb = torch.from_numpy(np.ascontiguousarray(image_emb, dtype=np.float32)) if image_emb is not None else None
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
        if img_emb is not None:
            # Drawn after `drop`, so a run without image embeddings keeps its random stream.
            pick = (torch.rand(batch_size, generator=g) < p_image).to(device)
            cond = torch.where(pick[:, None, None], model.image_tokens(img_emb[idx].to(device), cond.shape[1]), cond)
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
        if ckpt_dir is not None and ((ckpt_every and done % ckpt_every == 0) or done == steps):
            checkpoint.save(ckpt_dir, fingerprint, model=model.state_dict(), optimizer=opt.state_dict(),
                            step=done, torch_rng=torch.get_rng_state())
        if log is not None:
            log(step, float(loss.detach()))
    return model.eval()
