"""The strategy registry: turns a shift's params into a curated index (+ stats).

Adding a shift = a function here registered under a strategy name + an entry under `shifts:`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from . import strategies as S
from .common import UserError, fail, get, make_index
from .context import Context, Curated, embeddings_of


def _cap(cfg: dict, key: str) -> int | None:
    v = cfg.get("per_class_cap")
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
        raise fail(f"{key}.per_class_cap", f"expected null or an integer >= 0, got {v!r}")
    return v


def _index(ctx: Context, source: str, rows, labels, scores) -> pd.DataFrame:
    rows = np.asarray(rows, dtype=np.int64)
    prefix = {"train": f"{ctx.base_name}_train", "pool": "pool", "generated": "gen"}[source]
    return make_index([f"{prefix}:{r}" for r in rows], [source] * len(rows), labels, scores, row=rows)


def curate_balanced(ctx: Context, cfg: dict, key: str) -> Curated:
    per_class = get(ctx.params, f"{key}.per_class", int, lo=0)
    rng = np.random.default_rng(get(ctx.params, f"{key}.seed", int))
    base = ctx.base_rows
    rel = S.balanced_subset(ctx.train["labels"][base], per_class, rng, ctx.num_classes)
    rows = base[rel]
    return Curated(_index(ctx, "train", rows, ctx.train["labels"][rows], np.ones(len(rows))))


def _queries(ctx: Context, cfg: dict, key: str) -> np.ndarray:
    """Base-reserve rows used as queries/conditions, drawn by the shift's own seed so the shift
    does not depend on the `in` shift's params."""
    per_class = get(ctx.params, f"{key}.queries_per_class", int, lo=0)
    rng = np.random.default_rng(get(ctx.params, f"{key}.seed", int))
    base = ctx.base_rows
    return base[S.balanced_subset(ctx.train["labels"][base], per_class, rng, ctx.num_classes)]


def curate_img2img(ctx: Context, cfg: dict, key: str) -> Curated:
    q = _queries(ctx, cfg, key)
    k = get(ctx.params, f"{key}.k", int, lo=1)
    dedup = get(ctx.params, f"{key}.dedup", str, choices=("none", "vote", "drop"))
    web = ctx.web_rows
    rel, labels, scores = S.knn_transfer(ctx.emb("train_img")[q], ctx.train["labels"][q],
                                         ctx.emb("pool_img")[web], k, dedup, ctx.num_classes)
    rows = web[rel]
    keep = S.cap_per_class(labels, scores, _cap(cfg, key))
    return Curated(_index(ctx, "pool", rows[keep], labels[keep], scores[keep]),
                   stats={"queries": int(len(q)), "k": k, "dedup": dedup})


def _mentions(ctx: Context) -> np.ndarray:
    return S.class_mentions(ctx.pool_meta["caption"].tolist(), [c["synonyms"] for c in ctx.classes])


def curate_txt2img(ctx: Context, cfg: dict, key: str) -> Curated:
    thr = get(ctx.params, "curation.clip_threshold", float, lo=-1.0, hi=1.0)
    mentions = _mentions(ctx)
    rows, labels, scores = S.text_filter(mentions, ctx.emb("pool_txt"), ctx.emb("class_txt"), thr)
    keep = S.cap_per_class(labels, scores, _cap(cfg, key))
    return Curated(_index(ctx, "pool", rows[keep], labels[keep], scores[keep]),
                   stats={"clip_threshold": thr, "single_class_captions": int((mentions.sum(1) == 1).sum())})


def curate_substring(ctx: Context, cfg: dict, key: str) -> Curated:
    rows, labels = S.single_mention(_mentions(ctx))
    scores = np.ones(len(rows), dtype=np.float32)
    keep = S.cap_per_class(labels, scores, _cap(cfg, key))
    return Curated(_index(ctx, "pool", rows[keep], labels[keep], scores[keep]))


def curate_schema_map(ctx: Context, cfg: dict, key: str) -> Curated:
    from .sources import OpenImagesLabels

    verified = get(ctx.params, f"{key}.verified_only", bool)
    # The full profile's pool stage copies OpenImages' vocabulary and mapping beside its labels;
    # the embedded profile's simulated ones are data/meta's.
    pool, meta = ctx.root / "data/pool", ctx.root / "data/meta"
    vocab_dir = pool if (pool / "oi_mapping.json").exists() else meta
    oi = OpenImagesLabels(pool / "crowd_labels.csv", vocab_dir / "crowd_vocab.csv", vocab_dir / "oi_mapping.json")
    df = oi.curate(verified_only=verified)
    pool_ids = ctx.pool_meta["sample_id"].to_numpy()
    lookup = pd.Series(np.arange(len(pool_ids)), index=pool_ids)
    image_ids = df["sample_id"].str.slice(len("oi:"))
    found = image_ids.isin(lookup.index)
    if not found.all():
        raise UserError(f"crowd labels name {int((~found).sum())} images that are not in the pool")
    rows = lookup.loc[image_ids].to_numpy()
    order = np.lexsort((df["label"].to_numpy(), rows))
    idx = _index(ctx, "pool", rows[order], df["label"].to_numpy()[order], df["score"].to_numpy()[order])
    idx["oi_label"] = df["oi_label"].to_numpy()[order]
    return Curated(idx, stats={"unmapped_classes": oi.unmapped_classes(ctx.num_classes)})


def _hkm_draw(params: dict, emb: np.ndarray, n: int, key: str) -> np.ndarray:
    from . import hkmeans

    levels = get(params, f"{key}.levels", list)
    if not levels or not all(isinstance(v, int) and v > 0 for v in levels):
        raise fail(f"{key}.levels", f"expected a list of positive integers, got {levels!r}")
    seed = get(params, f"{key}.seed", int)
    tree = hkmeans.fit(emb, levels, n_iter=get(params, f"{key}.n_iter", int, lo=1),
                       resample_steps=get(params, f"{key}.resample_steps", int, lo=0),
                       sample_strategy=get(params, f"{key}.sample_strategy", str, choices=("closest", "random")), seed=seed)
    return hkmeans.balanced_sample(tree, n, leaf=get(params, f"{key}.leaf", str, choices=("random", "closest")), seed=seed)


def curate_hkm(ctx: Context, cfg: dict, key: str) -> Curated:
    """Label-free balanced selection from the pool, then labels by k-NN vote against the
    base-reserve embeddings (the only labelled data a curator is assumed to own)."""
    n = get(ctx.params, f"{key}.n", int, lo=0)
    pool_emb = ctx.emb("pool_img")
    base = ctx.base_rows
    candidates = ctx.web_rows
    prefilter = get(ctx.params, f"{key}.prefilter_clusters", int, lo=0)
    if prefilter:  # keep only the pool's in-domain clusters before balancing (DataComp image-based filter)
        keep = S.image_based_filter(pool_emb[candidates], ctx.emb("train_img")[base], prefilter,
                                    get(ctx.params, f"{key}.seed", int))
        candidates = candidates[keep]
    rows = candidates[_hkm_draw(ctx.params, pool_emb[candidates], n, key)]
    labels, conf = S.knn_vote(pool_emb[rows], ctx.emb("train_img")[base], ctx.train["labels"][base],
                              get(ctx.params, f"{key}.label_k", int, lo=1), ctx.num_classes)
    return Curated(_index(ctx, "pool", rows, labels, conf),
                   stats={"levels": cfg["levels"], "candidates_after_prefilter": int(len(candidates))})


def _generate(ctx: Context, key: str, prompts: list[str], init: np.ndarray | None = None) -> np.ndarray:
    """Images for the prompts (txt2img) or the init images + prompts (SDEdit img2img): the trained
    generator in the embedded profile, a local Stable Diffusion in the full one (at the base
    images' size, RGB)."""
    from . import generator
    from .common import read_json

    common = dict(seed=get(ctx.params, f"{key}.seed", int), steps=get(ctx.params, f"{key}.steps", int, lo=1),
                  guidance=get(ctx.params, f"{key}.guidance", float, lo=0.0),
                  batch_size=get(ctx.params, f"{key}.batch_size", int, lo=1), resume_dir=ctx.tmp_dir / "generate" / key)
    scheduler = get(ctx.params, f"{key}.scheduler", str, choices=("ddim", "unipc")) if init is None else "ddim"
    strength = get(ctx.params, f"{key}.strength", float, lo=0.0, hi=1.0) if init is not None else None
    cfg = read_json(ctx.root / "models/generator/config.json")
    if cfg.get("kind") == "pretrained":
        pipe = generator.load_sd_pipeline(cfg["model"], "txt2img" if init is None else "img2img")
        size = int(ctx.train_images.shape[1])
        extra = {"prompts": prompts, "strength": strength} if init is not None else {}
        out = generator.generate_sd(pipe, prompts if init is None else list(init), size=size, scheduler=scheduler,
                                    **common, **extra)
        return np.stack([np.asarray(im, dtype=np.uint8) for im in out])
    model = generator.load_generator(ctx.root / "models/generator")
    if init is None:
        return generator.txt2img(model, ctx.embedder.text_hidden, prompts, scheduler=scheduler, **common)
    return generator.img2img(model, ctx.embedder.text_hidden, init, prompts, strength=strength, **common)


def _prompts(ctx: Context, cfg: dict, key: str, labels: np.ndarray) -> list[str]:
    template = get(ctx.params, f"{key}.prompt", str)
    if "{name}" not in template:
        raise fail(f"{key}.prompt", "must contain {name}")
    names = [c["name"] for c in ctx.classes]
    return [template.format(name=names[c]) for c in labels]


def curate_sd_txt2img(ctx: Context, cfg: dict, key: str) -> Curated:
    per_class = get(ctx.params, f"{key}.per_class", int, lo=0)
    labels = np.repeat(np.arange(ctx.num_classes), per_class)
    images = _generate(ctx, key, _prompts(ctx, cfg, key, labels))
    rows = np.arange(len(labels))
    return Curated(_index(ctx, "generated", rows, labels, np.ones(len(rows))), images=images,
                   stats={"generated": int(len(rows))})


def curate_sd_img2img(ctx: Context, cfg: dict, key: str) -> Curated:
    q = _queries(ctx, cfg, key)
    labels = ctx.train["labels"][q]
    images = _generate(ctx, key, _prompts(ctx, cfg, key, labels), init=np.asarray(ctx.train_images[q]))
    rows = np.arange(len(q))
    idx = _index(ctx, "generated", rows, labels, np.ones(len(rows)))
    idx["condition"] = [f"{ctx.base_name}_train:{r}" for r in q]
    return Curated(idx, images=images, stats={"generated": int(len(rows))})


STRATEGIES: dict[str, Callable[[Context, dict, str], Curated]] = {
    "balanced": curate_balanced,
    "img2img": curate_img2img,
    "txt2img": curate_txt2img,
    "substring": curate_substring,
    "schema_map": curate_schema_map,
    "hkm": curate_hkm,
    "sd_txt2img": curate_sd_txt2img,
    "sd_img2img": curate_sd_img2img,
}


def rebalance(ctx: Context, cur: Curated, cfg: dict, key: str) -> Curated:
    """Hierarchical balanced sampling over a shift's candidates (arXiv 2405.15613), applied
    after the strategy and before sharding."""
    n = get(ctx.params, f"{key}.n", int, lo=0)
    if len(cur.index) == 0:
        return cur
    rows = _hkm_draw(ctx.params, embeddings_of(ctx, cur), n, key)
    idx = cur.index.iloc[rows].reset_index(drop=True)
    return Curated(idx, cur.images, {**cur.stats, "rebalanced_from": int(len(cur.index))})


def run(ctx: Context, key: str) -> Curated:
    shifts = get(ctx.params, "shifts", dict)
    if key not in shifts:
        raise fail("shifts", f"unknown shift {key!r}; defined: {', '.join(shifts)}")
    sub = f"shifts.{key}"
    cfg = get(ctx.params, sub, dict)
    strategy = get(ctx.params, f"{sub}.strategy", str, choices=tuple(STRATEGIES))
    cur = STRATEGIES[strategy](ctx, cfg, sub)
    if cfg.get("rebalance"):
        cur = rebalance(ctx, cur, get(ctx.params, f"{sub}.rebalance", dict), f"{sub}.rebalance")
    if cfg.get("subsample") is not None:  # data-quantity curves: a seeded uniform fraction of the shift
        frac = get(ctx.params, f"{sub}.subsample", float, lo=0.0, hi=1.0)
        keep = np.sort(np.random.default_rng(get(ctx.params, "curation.seed", int)).permutation(len(cur.index))
                       [: int(round(frac * len(cur.index)))])
        cur = Curated(cur.index.iloc[keep].reset_index(drop=True), cur.images,
                      {**cur.stats, "subsample": frac, "subsampled_from": int(len(cur.index))})
    cur.stats["strategy"] = strategy
    return cur
