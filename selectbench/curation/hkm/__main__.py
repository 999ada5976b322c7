"""`python -m selectbench.curation.hkm`: hierarchical k-means + balanced sampling on an .npy of
embeddings, for use outside the pipeline. Under torchrun (`torchrun --nproc-per-node N -m
selectbench.curation.hkm ...`) each rank memory-maps its own block of the rows and rank 0 writes
the outputs, which are the ones one process writes."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from selectbench.core.comm import LOCAL, Dist, shard_range
from selectbench.core.errors import fail
from selectbench.core.io import atomic_save_npy, write_json
from selectbench.core.runtime import finish_distributed, init_distributed, stage_main
from selectbench.curation.hkm.fit import ClusterCountWarning, fit
from selectbench.curation.hkm.kmeans import DEFAULT_INIT_SAMPLE, INITS
from selectbench.curation.hkm.sample import LEAF_STRATEGIES, SAMPLE_STRATEGIES, balanced_sample


def _int_list(key: str, text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise fail(key, f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise fail(key, f"expected comma-separated integers, got {text!r}")
    return vals


def _size_stats(s: np.ndarray) -> dict:
    return {"min": int(s.min()), "median": float(np.median(s)), "mean": float(s.mean()), "max": int(s.max())}


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m selectbench.curation.hkm",
        description="Hierarchical k-means curation: cluster embeddings, draw a concept-balanced subset.",
    )
    ap.add_argument("emb", help="embeddings, a 2-D .npy array (points x dims)")
    # --select, not --n alone: torchrun reads any abbreviation of its own options (--nnodes...) in the script args
    ap.add_argument("--select", "--n", dest="n", type=int, required=True, help="number of points to select")
    ap.add_argument("--levels", required=True, help="clusters per level, bottom first, e.g. 100,10")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-iter", type=int, default=50, help="Lloyd iterations per k-means")
    ap.add_argument("--resample-steps", default="10", help="one value or one per level")
    ap.add_argument("--sample-size", default=None, help="r per level (default: ceil(mean cluster size / 2))")
    ap.add_argument("--strategy", choices=SAMPLE_STRATEGIES, default="closest", help="resampling pick")
    ap.add_argument("--init", choices=INITS, default="kmeans++")
    ap.add_argument("--init-sample", type=int, default=DEFAULT_INIT_SAMPLE,
                    help="k-means++ seeds on a random sample of this many points per cluster; 0: all points "
                         f"(default {DEFAULT_INIT_SAMPLE})")
    ap.add_argument("--init-trials", type=int, default=None,
                    help="candidates per k-means++ step (default 2 + ln K, greedy; 1: plain k-means++)")
    ap.add_argument("--leaf", choices=LEAF_STRATEGIES, default="random", help="pick inside a leaf cluster")
    ap.add_argument("--multiplier", type=int, default=1, help="max times a point may be selected")
    ap.add_argument("--chunk", type=int, default=65536, help="rows per assignment batch (memory bound)")
    ap.add_argument("--gpu", action="store_true", help="faiss GPU assignment")
    ap.add_argument("--threads", type=int, default=None,
                    help="cap faiss/BLAS threads (1 is fastest on an oversubscribed machine)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    if args.n <= 0:
        raise fail("--n", f"must be > 0, got {args.n}")
    levels = _int_list("--levels", args.levels)
    if any(k < 1 for k in levels):
        raise fail("--levels", f"cluster counts must be >= 1, got {args.levels}")
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise fail("--levels", f"must be strictly decreasing (bottom level first), got {args.levels}")
    steps = _int_list("--resample-steps", args.resample_steps)
    steps = steps[0] if len(steps) == 1 else steps
    sample_size = None if args.sample_size is None else _int_list("--sample-size", args.sample_size)

    emb = Path(args.emb)
    if not emb.is_file():
        raise fail("emb", f"file not found: {emb}")
    try:
        x = np.load(emb, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise fail("emb", f"{emb} is not a readable .npy array ({e})") from None
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise fail("emb", f"{emb}: expected a 2-D array (points x dims), got shape {getattr(x, 'shape', None)}")

    rank, world = init_distributed()
    comm = Dist() if world > 1 else LOCAL
    lo, hi = shard_range(len(x), rank, world)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ClusterCountWarning)
        tree = fit(
            x[lo:hi],
            levels,
            n_iter=args.n_iter,
            resample_steps=steps,
            sample_size=sample_size,
            sample_strategy=args.strategy,
            init=args.init,
            init_sample=None if args.init_sample == 0 else args.init_sample,
            init_trials=args.init_trials,
            seed=args.seed,
            chunk=args.chunk,
            gpu=args.gpu,
            threads=args.threads,
            progress=not args.no_progress,
            comm=comm,
        )
    if rank != 0:
        finish_distributed(world)
        return 0
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    idx = balanced_sample(tree, args.n, leaf=args.leaf, multiplier=args.multiplier, seed=args.seed)
    t_sample = time.perf_counter() - t1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out / "indices.npy", idx)
    tree.save(out / "tree.npz")
    sizes = tree.sizes()
    sel = np.bincount(tree.labels(tree.n_levels)[idx], minlength=tree.n_clusters[-1]) if len(idx) else None
    write_json(
        out / "summary.json",
        {
            "embeddings": str(emb),
            "n_points": tree.n_points,
            "dim": int(x.shape[1]),
            "n_requested": args.n,
            "n_selected": int(len(idx)),
            "levels_requested": levels,
            "clusters_per_level": tree.n_clusters,
            "cluster_size_stats": [_size_stats(s) for s in sizes],
            "cluster_sizes": [s.tolist() for s in sizes],
            "selected_per_top_cluster": None if sel is None else sel.tolist(),
            "params": {
                "seed": args.seed,
                "n_iter": args.n_iter,
                "resample_steps": steps,
                "sample_size": sample_size,
                "strategy": args.strategy,
                "init": args.init,
                "init_sample": args.init_sample,
                "init_trials": args.init_trials,
                "leaf": args.leaf,
                "multiplier": args.multiplier,
                "threads": args.threads,
            },
            "seconds": {"fit": round(t_fit, 3), "sample": round(t_sample, 3)},
            "ranks": world,
        },
    )
    print(f"selected {len(idx)} of {tree.n_points} points; clusters per level {tree.n_clusters}; "
          f"fit {t_fit:.2f}s on {world} rank(s) -> {out}")
    finish_distributed(world)
    return 0


if __name__ == "__main__":
    main()
