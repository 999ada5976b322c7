"""The strategy registry: turns a shift's params into a curated index (+ stats).

Adding a shift = a function here registered under a strategy name + an entry under `shifts:`."""
from __future__ import annotations

from typing import Callable

import numpy as np

from selectbench.core.errors import fail
from selectbench.core.params import Section, get
from selectbench.curation.context import Context, Curated, embeddings_of
from selectbench.curation.generated import curate_sd_img2img, curate_sd_txt2img
from selectbench.curation.search import (
    curate_balanced,
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
}


def rebalance(ctx: Context, cur: Curated, cfg: Section) -> Curated:
    """Hierarchical balanced sampling over a shift's candidates (arXiv 2405.15613), applied
    after the strategy and before sharding."""
    n = cfg.get("n", int, lo=0)
    if len(cur.index) == 0:
        return cur
    rows = hkm_draw(cfg, embeddings_of(ctx, cur), n)
    idx = cur.index.iloc[rows].reset_index(drop=True)
    return Curated(idx, cur.images, {**cur.stats, "rebalanced_from": int(len(cur.index))})


def run(ctx: Context, key: str) -> Curated:
    shifts = get(ctx.params, "shifts", dict)
    if key not in shifts:
        raise fail("shifts", f"unknown shift {key!r}; defined: {', '.join(shifts)}")
    cfg = Section(ctx.params, f"shifts.{key}")
    strategy = cfg.get("strategy", str, choices=tuple(STRATEGIES))
    cur = STRATEGIES[strategy](ctx, cfg)
    if cfg.opt("rebalance"):
        cur = rebalance(ctx, cur, cfg.sub("rebalance"))
    if cfg.opt("subsample") is not None:  # data-quantity curves: a seeded uniform fraction of the shift
        frac = cfg.get("subsample", float, lo=0.0, hi=1.0)
        keep = np.sort(np.random.default_rng(cfg.shared("curation.seed", int)).permutation(len(cur.index))
                       [: int(round(frac * len(cur.index)))])
        cur = Curated(cur.index.iloc[keep].reset_index(drop=True), cur.images,
                      {**cur.stats, "subsample": frac, "subsampled_from": int(len(cur.index))})
    cur.stats["strategy"] = strategy
    return cur
