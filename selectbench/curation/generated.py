"""Strategies that generate images: text-to-image and image variations (SELECT's "SD img2img")
with the pipeline's diffusion model (embedded) or a local Stable Diffusion (full)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from selectbench.core import genshards, images, layout
from selectbench.core.errors import fail
from selectbench.core.genshards import GeneratedImages
from selectbench.core.io import read_json
from selectbench.core.params import Section
from selectbench.curation.context import Context, Curated
from selectbench.curation.search import query_rows, shift_index
from selectbench.evaluation.copies import near_copy


class RankFinished(Exception):
    """A worker rank has written its share of the generated shards; rank 0 finishes the stage."""


def store(ctx: Context, cfg: Section) -> Path:
    """Where a generated shift's shards are written, resumably, before the curate stage moves them
    into data/curated/<shift>/generated."""
    return ctx.tmp_dir / "generate" / cfg.key.removeprefix("shifts.")


def _generate(ctx: Context, cfg: Section, prompts: list[str] | None = None,
              rows: np.ndarray | None = None) -> GeneratedImages:
    """Images for the prompts (txt2img), or one image variation per base train row (rows): from
    pure noise, conditioned on that image's CLIP embedding, never on its pixels. The trained
    generator in the embedded profile, a local Stable Diffusion in the full one (at the base
    images' size, RGB). The images stream into WebDataset shards, each rank of ctx.comm making
    its share; worker ranks stop here (RankFinished)."""
    from selectbench.models import generator, sampling, sd

    batch = cfg.get("batch_size", int, lo=1)
    common = dict(seed=cfg.get("seed", int), steps=cfg.get("steps", int, lo=1),
                  guidance=cfg.get("guidance", float, lo=0.0), scheduler=cfg.get("scheduler", str, choices=("ddim", "unipc")),
                  batch_size=batch, resume_dir=store(ctx, cfg), comm=ctx.comm,
                  shard_size=genshards.per_shard(batch, cfg.shared("shard.samples_per_shard", int, lo=1)))
    model_cfg = read_json(ctx.root / layout.GENERATOR / "config.json")
    if model_cfg.get("kind") == "pretrained":
        size = int(ctx.train_images.shape[1])
        if rows is None:
            pipe = sd.load_sd_pipeline(model_cfg["model"], "txt2img")
            out = sd.generate_sd(pipe, prompts, size=size, **common)
        else:
            pipe = sd.load_sd_pipeline(model_cfg["variation"], "variation")
            out = sd.generate_sd(pipe, images.Subset(ctx.train_images, rows), size=size, **common)
    else:
        model = generator.load_generator(ctx.root / layout.GENERATOR)
        if rows is None:
            out = sampling.txt2img(model, ctx.embedder.text_hidden, prompts, **common)
        else:
            out = sampling.variation(model, ctx.embedder.text_hidden, ctx.emb("train_img")[rows], **common)
    if ctx.comm.rank != 0:
        raise RankFinished
    return out


def _prompts(ctx: Context, cfg: Section, labels: np.ndarray) -> list[str]:
    template = cfg.get("prompt", str)
    if "{name}" not in template:
        raise fail(f"{cfg.key}.prompt", "must contain {name}")
    names = ctx.classes.names
    return [template.format(name=names[c]) for c in labels]


def curate_sd_txt2img(ctx: Context, cfg: Section) -> Curated:
    per_class = cfg.get("per_class", int, lo=0)
    labels = np.repeat(np.arange(ctx.num_classes), per_class)
    images = _generate(ctx, cfg, _prompts(ctx, cfg, labels))
    rows = np.arange(len(labels))
    return Curated(shift_index(ctx, "generated", rows, labels, np.ones(len(rows))), images=images,
                   stats={"generated": int(len(rows))})


def curate_sd_img2img(ctx: Context, cfg: Section) -> Curated:
    q = query_rows(ctx, cfg)
    labels = ctx.train["labels"][q]
    images = _generate(ctx, cfg, rows=np.asarray(q))
    rows = np.arange(len(q))
    idx = shift_index(ctx, "generated", rows, labels, np.ones(len(rows)))
    idx["condition"] = [f"{ctx.base_name}_train:{r}" for r in q]
    base_labels = np.full(len(ctx.train["labels"]), -1)  # "another image of its class" comes from the base rows
    base_labels[ctx.base_rows] = ctx.train["labels"][ctx.base_rows]
    copy = near_copy(images, ctx.train_images, np.asarray(q), labels, base_labels, cfg.get("seed", int))
    return Curated(idx, images=images, stats={"generated": int(len(rows)), "near_copy": copy})
