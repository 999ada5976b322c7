"""The strategy registry: turns a shift's params into a curated index (+ stats).

Adding a shift = a function here registered under a strategy name + an entry under `shifts:`."""
from __future__ import annotations

import numpy as np

from selectbench.core.context import Context, Curated
from selectbench.core.errors import fail
from selectbench.core.io import read_json
from selectbench.core.params import get
from selectbench.curation.search import query_rows, shift_index


def _generate(ctx: Context, key: str, prompts: list[str], init: np.ndarray | None = None) -> np.ndarray:
    """Images for the prompts (txt2img) or the init images + prompts (SDEdit img2img): the trained
    generator in the embedded profile, a local Stable Diffusion in the full one (at the base
    images' size, RGB)."""
    from selectbench.models import generator, sampling, sd

    common = dict(seed=get(ctx.params, f"{key}.seed", int), steps=get(ctx.params, f"{key}.steps", int, lo=1),
                  guidance=get(ctx.params, f"{key}.guidance", float, lo=0.0),
                  batch_size=get(ctx.params, f"{key}.batch_size", int, lo=1), resume_dir=ctx.tmp_dir / "generate" / key)
    scheduler = get(ctx.params, f"{key}.scheduler", str, choices=("ddim", "unipc")) if init is None else "ddim"
    strength = get(ctx.params, f"{key}.strength", float, lo=0.0, hi=1.0) if init is not None else None
    cfg = read_json(ctx.root / "models/generator/config.json")
    if cfg.get("kind") == "pretrained":
        pipe = sd.load_sd_pipeline(cfg["model"], "txt2img" if init is None else "img2img")
        size = int(ctx.train_images.shape[1])
        extra = {"prompts": prompts, "strength": strength} if init is not None else {}
        out = sd.generate_sd(pipe, prompts if init is None else list(init), size=size, scheduler=scheduler,
                                    **common, **extra)
        return np.stack([np.asarray(im, dtype=np.uint8) for im in out])
    model = generator.load_generator(ctx.root / "models/generator")
    if init is None:
        return sampling.txt2img(model, ctx.embedder.text_hidden, prompts, scheduler=scheduler, **common)
    return sampling.img2img(model, ctx.embedder.text_hidden, init, prompts, strength=strength, **common)


def _prompts(ctx: Context, cfg: dict, key: str, labels: np.ndarray) -> list[str]:
    template = get(ctx.params, f"{key}.prompt", str)
    if "{name}" not in template:
        raise fail(f"{key}.prompt", "must contain {name}")
    names = ctx.classes.names
    return [template.format(name=names[c]) for c in labels]


def curate_sd_txt2img(ctx: Context, cfg: dict, key: str) -> Curated:
    per_class = get(ctx.params, f"{key}.per_class", int, lo=0)
    labels = np.repeat(np.arange(ctx.num_classes), per_class)
    images = _generate(ctx, key, _prompts(ctx, cfg, key, labels))
    rows = np.arange(len(labels))
    return Curated(shift_index(ctx, "generated", rows, labels, np.ones(len(rows))), images=images,
                   stats={"generated": int(len(rows))})


def curate_sd_img2img(ctx: Context, cfg: dict, key: str) -> Curated:
    q = query_rows(ctx, cfg, key)
    labels = ctx.train["labels"][q]
    images = _generate(ctx, key, _prompts(ctx, cfg, key, labels), init=np.asarray(ctx.train_images[q]))
    rows = np.arange(len(q))
    idx = shift_index(ctx, "generated", rows, labels, np.ones(len(rows)))
    idx["condition"] = [f"{ctx.base_name}_train:{r}" for r in q]
    return Curated(idx, images=images, stats={"generated": int(len(rows))})
