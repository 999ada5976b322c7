"""The strategy registry: turns a shift's params into a curated index (+ stats).

Adding a shift = a function here registered under a strategy name + an entry under `shifts:`."""
from __future__ import annotations

from typing import Callable

import numpy as np

from selectbench.core.errors import fail
from selectbench.core.params import Section, get
from selectbench.curation import strategies as S
from selectbench.curation.budget import match_budget, shuffle_labels
from selectbench.curation.context import Context, Curated, embeddings_of
from selectbench.curation.generated import curate_sd_img2img, curate_sd_txt2img
from selectbench.curation.search import (
    curate_balanced,
    curate_clip_score,
    curate_hkm,
    curate_img2img,
    curate_schema_map,
    curate_substring,
    curate_txt2img,
    hkm_draw,
)

STRATEGIES: dict[str, Callable[[Context, Section], Curated]] = {
    "balanced": curate_balanced,
    "img2img": curate_img2img,
    "txt2img": curate_txt2img,
    "substring": curate_substring,
    "schema_map": curate_schema_map,
    "hkm": curate_hkm,
    "sd_txt2img": curate_sd_txt2img,
    "sd_img2img": curate_sd_img2img,
    "clip_score": curate_clip_score,
}
# Strategies that split their work over torchrun ranks (curation.nproc): k-means points, generated shards.
DISTRIBUTED = ("hkm", "sd_txt2img", "sd_img2img")


def strategy_of(params: dict, key: str) -> str:
    shifts = get(params, "shifts", dict)
    if key not in shifts:
        raise fail("shifts", f"unknown shift {key!r}; defined: {', '.join(shifts)}")
    return Section(params, f"shifts.{key}").get("strategy", str, choices=tuple(STRATEGIES))


def rebalance(ctx: Context, cur: Curated, cfg: Section) -> Curated:
    """Hierarchical balanced sampling over a shift's candidates (arXiv 2405.15613), applied
    after the strategy and before sharding."""
    n = cfg.get("n", int, lo=0)
    if len(cur.index) == 0:
        return cur
    rows = hkm_draw(cfg, embeddings_of(ctx, cur), n)
    idx = cur.index.iloc[rows].reset_index(drop=True)
    return Curated(idx, cur.images, {**cur.stats, "rebalanced_from": int(len(cur.index))})


def semdedup(ctx: Context, cur: Curated, cfg: Section) -> Curated:
    """Semantic deduplication of a shift's candidates (SemDeDup), applied after the strategy and
    before rebalancing and the matched budget."""
    if len(cur.index) == 0:
        return cur
    rows = S.semdedup(embeddings_of(ctx, cur), cfg.get("clusters", int, lo=1),
                      cfg.get("epsilon", float, lo=0.0, hi=2.0), cfg.get("seed", int))
    idx = cur.index.iloc[rows].reset_index(drop=True)
    return Curated(idx, cur.images, {**cur.stats, "semdedup_from": int(len(cur.index))})


def clean(ctx: Context, cur: Curated, cfg: Section) -> Curated:
    """Confident-learning label cleaning of a shift's candidates on the curation embedder's image
    embeddings (never an evaluation encoder), applied after SemDeDup and before rebalancing."""
    if len(cur.index) == 0:
        return cur
    rows = S.clean(embeddings_of(ctx, cur), cur.index["label"].to_numpy(), ctx.num_classes,
                   cfg.get("folds", int, lo=2), cfg.get("seed", int))
    if len(rows) == 0:
        raise fail(cfg.key, "cleaning removed every item; check the shift's labels")
    idx = cur.index.iloc[rows].reset_index(drop=True)
    return Curated(idx, cur.images, {**cur.stats, "cleaned_from": int(len(cur.index)),
                                     "label_issues_removed": int(len(cur.index) - len(rows))})


def run(ctx: Context, key: str) -> Curated:
    strategy = strategy_of(ctx.params, key)
    cfg = Section(ctx.params, f"shifts.{key}")
    cur = STRATEGIES[strategy](ctx, cfg)
    if cfg.opt("semdedup"):
        cur = semdedup(ctx, cur, cfg.sub("semdedup"))
    if cfg.opt("clean"):
        cur = clean(ctx, cur, cfg.sub("clean"))
    if cfg.opt("rebalance"):
        cur = rebalance(ctx, cur, cfg.sub("rebalance"))
    # Every shift at the same size (curation.images), before the data-quantity fraction below.
    budget = cfg.shared("curation.images", (int, type(None)))
    if budget is not None:
        if budget < 1:
            raise fail("curation.images", f"must be >= 1 or null, got {budget}")
        rows = match_budget(cur.index["label"].to_numpy(), budget, cfg.shared("curation.seed", int))
        cur = Curated(cur.index.iloc[rows].reset_index(drop=True), cur.images,
                      {**cur.stats, "image_budget": budget, "matched_from": int(len(cur.index))})
    if cfg.opt("shuffle_labels"):  # the negative control: the same images, labels permuted
        if not isinstance(cfg.opt("shuffle_labels"), bool):
            raise fail(f"shifts.{key}.shuffle_labels", f"expected true or false, got {cfg.opt('shuffle_labels')!r}")
        idx = cur.index.copy()
        idx["label"] = shuffle_labels(idx["label"].to_numpy(), cfg.shared("curation.seed", int))
        cur = Curated(idx, cur.images, {**cur.stats, "labels_shuffled": True})
    if cfg.opt("subsample") is not None:  # data-quantity curves: a seeded uniform fraction of the shift
        frac = cfg.get("subsample", float, lo=0.0, hi=1.0)
        keep = np.sort(np.random.default_rng(cfg.shared("curation.seed", int)).permutation(len(cur.index))
                       [: int(round(frac * len(cur.index)))])
        cur = Curated(cur.index.iloc[keep].reset_index(drop=True), cur.images,
                      {**cur.stats, "subsample": frac, "subsampled_from": int(len(cur.index))})
    cur.stats["strategy"] = strategy
    return cur
