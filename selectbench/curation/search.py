"""Strategies that select and label existing images: expert subsets, web search by image or text,
crowd schema mapping, label-free hierarchical k-means. Each returns a Curated index."""
from __future__ import annotations

import numpy as np
import pandas as pd

from selectbench.core import layout
from selectbench.core.comm import LOCAL, Local, shard_range
from selectbench.core.errors import UserError, fail
from selectbench.core.index import make_index
from selectbench.core.openimages import OpenImagesLabels
from selectbench.core.params import Section
from selectbench.curation import strategies as S
from selectbench.curation.context import Context, Curated


def _cap(cfg: Section) -> int | None:
    v = cfg.opt("per_class_cap")
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
        raise fail(f"{cfg.key}.per_class_cap", f"expected null or an integer >= 0, got {v!r}")
    return v


def shift_index(ctx: Context, source: str, rows, labels, scores) -> pd.DataFrame:
    rows = np.asarray(rows, dtype=np.int64)
    prefix = {"train": f"{ctx.base_name}_train", "pool": "pool", "generated": "gen"}[source]
    return make_index([f"{prefix}:{r}" for r in rows], [source] * len(rows), labels, scores, row=rows)


def curate_balanced(ctx: Context, cfg: Section) -> Curated:
    per_class = cfg.get("per_class", int, lo=0)
    rng = np.random.default_rng(cfg.get("seed", int))
    base = ctx.base_rows
    rel = S.balanced_subset(ctx.train["labels"][base], per_class, rng, ctx.num_classes)
    rows = base[rel]
    return Curated(shift_index(ctx, "train", rows, ctx.train["labels"][rows], np.ones(len(rows))))


def query_rows(ctx: Context, cfg: Section) -> np.ndarray:
    """Base-reserve rows used as queries/conditions, drawn by the shift's own seed so the shift
    does not depend on the `in` shift's params."""
    per_class = cfg.get("queries_per_class", int, lo=0)
    rng = np.random.default_rng(cfg.get("seed", int))
    base = ctx.base_rows
    return base[S.balanced_subset(ctx.train["labels"][base], per_class, rng, ctx.num_classes)]


def curate_img2img(ctx: Context, cfg: Section) -> Curated:
    q = query_rows(ctx, cfg)
    k = cfg.get("k", int, lo=1)
    dedup = cfg.get("dedup", str, choices=("none", "vote", "drop"))
    web = ctx.web_rows
    rel, labels, scores = S.knn_transfer(ctx.emb("train_img")[q], ctx.train["labels"][q],
                                         ctx.emb("pool_img")[web], k, dedup, ctx.num_classes)
    rows = web[rel]
    keep = S.cap_per_class(labels, scores, _cap(cfg))
    return Curated(shift_index(ctx, "pool", rows[keep], labels[keep], scores[keep]),
                   stats={"queries": int(len(q)), "k": k, "dedup": dedup})


def _mentions(ctx: Context) -> np.ndarray:
    return ctx.classes.mentions(ctx.pool_meta["caption"].tolist())


def curate_txt2img(ctx: Context, cfg: Section) -> Curated:
    thr = cfg.shared("curation.clip_threshold", float, lo=-1.0, hi=1.0)
    mentions = _mentions(ctx)
    rows, labels, scores = S.text_filter(mentions, ctx.emb("pool_txt"), ctx.emb("class_txt"), thr)
    keep = S.cap_per_class(labels, scores, _cap(cfg))
    return Curated(shift_index(ctx, "pool", rows[keep], labels[keep], scores[keep]),
                   stats={"clip_threshold": thr, "single_class_captions": int((mentions.sum(1) == 1).sum())})


def curate_substring(ctx: Context, cfg: Section) -> Curated:
    rows, labels = S.single_mention(_mentions(ctx))
    scores = np.ones(len(rows), dtype=np.float32)
    keep = S.cap_per_class(labels, scores, _cap(cfg))
    return Curated(shift_index(ctx, "pool", rows[keep], labels[keep], scores[keep]))


def curate_clip_score(ctx: Context, cfg: Section) -> Curated:
    """DataComp's CLIP-score filter over the pool's captions that name one class (labelled by that
    class): keep the top `fraction` by image-caption similarity, or those at or above `threshold`."""
    rows, labels = S.single_mention(_mentions(ctx))
    pos, scores = S.clip_score_filter(ctx.emb("pool_img")[rows], ctx.emb("pool_txt")[rows],
                                      fraction=cfg.get("fraction", (int, float, type(None))),
                                      threshold=cfg.get("threshold", (int, float, type(None))), key=cfg.key)
    scores = scores.astype(np.float32)
    keep = S.cap_per_class(labels[pos], scores, _cap(cfg))
    return Curated(shift_index(ctx, "pool", rows[pos][keep], labels[pos][keep], scores[keep]),
                   stats={"candidates": int(len(rows)), "clip_score_kept": int(len(pos))})


def curate_schema_map(ctx: Context, cfg: Section) -> Curated:

    verified = cfg.get("verified_only", bool)
    # The full profile's pool stage copies OpenImages' vocabulary and mapping beside its labels;
    # the embedded profile's simulated ones are data/meta's.
    pool, meta = ctx.root / layout.POOL, ctx.root / layout.META
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
    idx = shift_index(ctx, "pool", rows[order], df["label"].to_numpy()[order], df["score"].to_numpy()[order])
    idx["oi_label"] = df["oi_label"].to_numpy()[order]
    return Curated(idx, stats={"unmapped_classes": oi.unmapped_classes(ctx.num_classes)})


def hkm_draw(cfg: Section, emb: np.ndarray, n: int, comm: Local = LOCAL) -> np.ndarray:
    """Rows of `emb` drawn by hierarchical k-means; over comm's ranks each clusters its own block."""
    from selectbench.curation.hkm import fit, sample

    levels = cfg.get("levels", list)
    if not levels or not all(isinstance(v, int) and v > 0 for v in levels):
        raise fail(f"{cfg.key}.levels", f"expected a list of positive integers, got {levels!r}")
    seed = cfg.get("seed", int)
    lo, hi = shard_range(len(emb), comm.rank, comm.world)
    tree = fit.fit(emb[lo:hi], levels, n_iter=cfg.get("n_iter", int, lo=1),
                       resample_steps=cfg.get("resample_steps", int, lo=0),
                       sample_strategy=cfg.get("sample_strategy", str, choices=("closest", "random")), seed=seed,
                       comm=comm)
    return sample.balanced_sample(tree, n, leaf=cfg.get("leaf", str, choices=("random", "closest")), seed=seed)


def curate_hkm(ctx: Context, cfg: Section) -> Curated:
    """Label-free balanced selection from the pool, then labels by k-NN vote against the
    base-reserve embeddings (the only labelled data a curator is assumed to own)."""
    n = cfg.get("n", int, lo=0)
    pool_emb = ctx.emb("pool_img")
    base = ctx.base_rows
    candidates = ctx.web_rows
    prefilter = cfg.get("prefilter_clusters", int, lo=0)
    if prefilter:  # keep only the pool's in-domain clusters before balancing (DataComp image-based filter)
        keep = S.image_based_filter(pool_emb[candidates], ctx.emb("train_img")[base], prefilter,
                                    cfg.get("seed", int))
        candidates = candidates[keep]
    rows = candidates[hkm_draw(cfg, pool_emb[candidates], n, ctx.comm)]
    labels, conf = S.knn_vote(pool_emb[rows], ctx.emb("train_img")[base], ctx.train["labels"][base],
                              cfg.get("label_k", int, lo=1), ctx.num_classes)
    return Curated(shift_index(ctx, "pool", rows, labels, conf),
                   stats={"levels": cfg.raw["levels"], "candidates_after_prefilter": int(len(candidates))})
