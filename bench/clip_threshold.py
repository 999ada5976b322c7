"""How LAIONet's filter (`curation.clip_threshold`) thins each class: the candidates it keeps per
class at SELECT's 0.5 and at the threshold that keeps a given share of all candidates. A diagnostic
for a threshold rule; it reads embeddings only, never a trained model's accuracy.

Usage (after `dvc repro -s embed`, inside the venv): python -m bench.clip_threshold
"""
import argparse

import numpy as np

from selectbench.core.params import load_params
from selectbench.curation.context import Context
from selectbench.curation.strategies import caption_similarity


def similarities(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, class) of every single-class caption of the pool, as text_filter computes them."""
    mentions = ctx.classes.mentions(ctx.pool_meta["caption"].tolist())
    _, labels, sims = caption_similarity(mentions, ctx.emb("pool_txt"), ctx.emb("class_txt"))
    return sims, labels


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.clip_threshold")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--retain", type=float, default=0.5, help="share of candidates the threshold keeps")
    args = ap.parse_args(argv)
    ctx = Context(load_params(args.params))
    sims, labels = similarities(ctx)
    thr = float(np.quantile(sims, 1 - args.retain))
    names = ctx.classes.names
    print(f"{len(sims)} single-class captions; threshold keeping {args.retain:.0%}: {thr:.4f} (rounded: {thr:.2f})")
    print("class | candidates | kept at rounded rule | kept at 0.5")
    for c in range(ctx.num_classes):
        s = sims[labels == c]
        print(f"{names[c]} | {len(s)} | {(s >= round(thr, 2)).sum()} | {(s >= 0.5).sum()}")


if __name__ == "__main__":
    main()
