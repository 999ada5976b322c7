"""Stage `pool`: the candidate pool, its crowd labels and the natural-shift set.

Embedded profile: the simulated web-like pool (selectbench.pool). Full profile: LAION + OpenImages
and the ImageNet variants (selectbench.full).

    python -m stages.pool [--params params.yaml] [--train data/raw/train.npz]
                          [--out data/pool] [--natural-out data/natural]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from selectbench.core import layout
from selectbench.core.classes import load as load_classes
from selectbench.core.params import get, load_params, profile
from selectbench.core.runtime import stage_main
from selectbench.embedded.fmnist import load_train
from selectbench.embedded.pool import build_pool
from selectbench.full import build as full


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.pool", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default=str(layout.TRAIN_SPLIT))
    ap.add_argument("--out", default=str(layout.POOL))
    ap.add_argument("--natural-out", default=str(layout.NATURAL))
    args = ap.parse_args(argv)

    params = load_params(args.params)
    t0 = time.perf_counter()
    if profile(params) == "full":
        classes = list(load_classes().entries)
        stats = full.build_pool(params, classes, Path(args.out), Path(args.natural_out))
    else:
        stats = build_pool(load_train(args.train), get(params, "pool", dict), args.out, args.natural_out)
    per_source = ", ".join(f"{k} {v}" for k, v in stats["counts_per_source"].items())
    # Unreadable / too large / blank inputs are skipped, never fatal: say how many and why.
    skipped = "; ".join(f"{src} " + ", ".join(f"{why} {n}" for why, n in reasons.items())
                        for src, reasons in stats["skipped"].items() if reasons)
    nat_bad = "; ".join(f"{src} " + ", ".join(f"{why} {n}" for why, n in reasons.items())
                        for src, reasons in stats["natural"].get("undecodable", {}).items() if reasons)
    print(
        f"pool: {stats['n_total']} items ({per_source}); skipped: {skipped or 'none'}; "
        f"natural: {stats['natural']['n']} items (undecodable, left out: {nat_bad or 'none'}); "
        f"{time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    main()
