"""Stage `pool`: the web-like candidate pool, its simulated crowd labels and the natural-shift set.

    python -m stages.pool [--params params.yaml] [--train data/raw/train.npz]
                          [--out data/pool] [--natural-out data/natural]
"""
from __future__ import annotations

import argparse
import sys
import time

from selectbench.common import get, load_params, stage_main
from selectbench.pool import build_pool, load_train


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.pool", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/raw/train.npz")
    ap.add_argument("--out", default="data/pool")
    ap.add_argument("--natural-out", default="data/natural")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    cfg = get(params, "pool", dict)
    train = load_train(args.train)
    t0 = time.perf_counter()
    stats = build_pool(train, cfg, args.out, args.natural_out)
    per_source = ", ".join(f"{k} {v}" for k, v in stats["counts_per_source"].items())
    # Unreadable / too large / blank inputs are skipped, never fatal: say how many and why.
    skipped = "; ".join(f"{src} " + ", ".join(f"{why} {n}" for why, n in reasons.items())
                        for src, reasons in stats["skipped"].items() if reasons)
    print(
        f"pool: {stats['n_total']} items ({per_source}); skipped: {skipped or 'none'}; "
        f"natural: {stats['natural']['n']} items; {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    main()
