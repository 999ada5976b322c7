"""Benchmark: selectbench.hkmeans against the reference facebookresearch/ssl-data-curation.

Both run on the same Zipf-weighted Gaussian mixture with the same levels, 50 Lloyd iterations
(the reference hard-codes 50), the same resampling steps and per-level sample sizes, and draw the
same number of points. Reported: wall time of clustering and of sampling for each, the process
CPU time (``time.process_time``, all threads) of the same span, the load average before and after,
the speed ratios of the medians (wall and CPU), and the balance of each draw over the true mixture
components (KL divergence to uniform, components hit), next to a uniform random draw.

The reference is imported from a checkout given with --ref; none of its code lives in this repo.
It runs on CPU tensors through its single-process path (hierarchical_kmeans_with_resampling),
which needs no torch.distributed set-up. One shim is applied at run time: it uses ``np.Inf``,
which NumPy 2 removed, so the alias is restored before its k-means runs.

    python bench/hkm_vs_reference.py --ref /tmp/ssl-data-curation
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from selectbench.curation.hkm import (
    fit,  # noqa: E402
    kmeans,
    sample,
)


def mixture(n: int, dim: int, components: int, zipf: float, spread: float, seed: int):
    """Component k has weight proportional to 1/k^zipf; means ~ N(0, spread^2 I), unit noise."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, components + 1) ** zipf
    w /= w.sum()
    comp = rng.choice(components, size=n, p=w)
    means = rng.standard_normal((components, dim)) * spread
    x = (means[comp] + rng.standard_normal((n, dim))).astype(np.float32)
    return x, comp


def balance(idx: np.ndarray, comp: np.ndarray, components: int) -> tuple[float, int]:
    p = np.bincount(comp[idx], minlength=components) / len(idx)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] * components))), int(nz.sum())


def run_reference(ref: Path, x, levels, sample_sizes, steps, strategy, draw, seed):
    sys.path.insert(0, str(ref))
    from src import hierarchical_kmeans_gpu as hkmg  # type: ignore
    from src import hierarchical_sampling as hs  # type: ignore
    from src.clusters import HierarchicalCluster  # type: ignore

    if not hasattr(np, "Inf"):
        np.Inf = np.inf  # the reference's k-means starts its best-potential search from np.Inf
    # The reference draws from the global generators (random_state=None, np.random.choice).
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    c0 = time.process_time()
    t0 = time.perf_counter()
    # Its progress bars write to stdout; keep them out of the report (they still render).
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        res = hkmg.hierarchical_kmeans_with_resampling(
            data=torch.tensor(x, dtype=torch.float32),
            n_clusters=list(levels),
            n_levels=len(levels),
            sample_sizes=list(sample_sizes),
            n_resamples=steps,
            init_method="kmeans++",
            sample_strategy=strategy,
            verbose=False,
        )
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        cl = HierarchicalCluster.from_dict(res)
        idx = np.asarray(hs.hierarchical_sampling(cl, target_size=draw, multiplier=1, sampling_strategy="r"))
    t_sample = time.perf_counter() - t1
    cpu = time.process_time() - c0
    n_clusters = [int(sum(len(c) > 0 for c in r["clusters"])) for r in res]
    return idx.astype(np.int64), t_fit, t_sample, cpu, n_clusters


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", type=Path, required=True, help="checkout of facebookresearch/ssl-data-curation")
    ap.add_argument("--n-points", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--components", type=int, default=50)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--spread", type=float, default=1.0, help="std of the component means per dim")
    ap.add_argument("--levels", default="200,50")
    ap.add_argument("--resample-steps", type=int, default=10)
    ap.add_argument("--strategy", choices=("closest", "random"), default="closest")
    ap.add_argument("--draw", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="data seed and first algorithm seed")
    ap.add_argument("--repeats", type=int, default=1, help="algorithm seeds seed..seed+repeats-1")
    ap.add_argument("--threads", type=int, default=2, help="threads for torch, faiss and BLAS (both sides)")
    ap.add_argument("--init-sample", default="default",
                    help="ours: k-means++ seeding sample per cluster; 'default' (the library's), 'all', or an integer")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)

    if not (args.ref / "src" / "hierarchical_kmeans_gpu.py").is_file():
        ap.error(f"--ref {args.ref}: not a checkout of facebookresearch/ssl-data-curation")
    # One thread cap for every pool in the process: torch's, faiss's OpenMP and both OpenBLAS
    # copies (numpy's and faiss's), so neither side runs with more threads than the other.
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)
    levels = [int(v) for v in args.levels.split(",")]
    init_kw = {} if args.init_sample == "default" else {
        "init_sample": None if args.init_sample == "all" else int(args.init_sample)}
    load0 = os.getloadavg()
    x, comp = mixture(args.n_points, args.dim, args.components, args.zipf, args.spread, args.seed)
    # Same r for both: ceil(mean cluster size / 2) per level, the reference's documented rule.
    sample_sizes, n_prev = [], args.n_points
    for k in levels:
        sample_sizes.append(-(-n_prev // (2 * k)))
        n_prev = k
    counts = np.bincount(comp, minlength=args.components)
    print(f"data: N={args.n_points} D={args.dim} components={args.components} zipf={args.zipf} "
          f"(sizes {counts.max()}..{counts.min()}); levels={levels} sample_sizes={sample_sizes} "
          f"resample_steps={args.resample_steps} strategy={args.strategy} n_iter=50 draw={args.draw} "
          f"threads={args.threads} ours.init_sample={init_kw.get('init_sample', kmeans.DEFAULT_INIT_SAMPLE)}")
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} ({os.cpu_count()} CPUs)")

    rng = np.random.default_rng(args.seed + 1)
    kl_rand, hit_rand = balance(rng.choice(args.n_points, args.draw, replace=False), comp, args.components)
    print(f"{'uniform random':<16} KL={kl_rand:.3f} hit={hit_rand}/{args.components}")

    rows = {"ours": [], "reference": []}
    for rep in range(args.repeats):
        seed = args.seed + rep
        c0 = time.process_time()
        t0 = time.perf_counter()
        tree = fit.fit(
            x, levels, n_iter=50, resample_steps=args.resample_steps, sample_size=sample_sizes,
            sample_strategy=args.strategy, init="kmeans++", seed=seed, **init_kw,
        )
        t_fit = time.perf_counter() - t0
        t1 = time.perf_counter()
        idx = sample.balanced_sample(tree, args.draw, leaf="random", seed=seed)
        t_sample = time.perf_counter() - t1
        runs = [("ours", idx, t_fit, t_sample, time.process_time() - c0, tree.n_clusters)]
        if not args.skip_reference:
            runs.append(("reference", *run_reference(
                args.ref, x, levels, sample_sizes, args.resample_steps, args.strategy, args.draw, seed
            )))
        for name, idx, t_fit, t_sample, cpu, n_clusters in runs:
            kl, hit = balance(idx, comp, args.components)
            rows[name].append((t_fit + t_sample, cpu, kl, hit))
            print(f"{name:<10} seed={seed} fit={t_fit:.2f}s sample={t_sample:.3f}s total={t_fit + t_sample:.2f}s "
                  f"cpu={cpu:.2f}s clusters={n_clusters} n={len(idx)} unique={len(np.unique(idx))} KL={kl:.3f} "
                  f"hit={hit}/{args.components} load={os.getloadavg()[0]:.2f}")
    for name, r in rows.items():
        if r:
            t, cpu, kl, hit = (np.array(v) for v in zip(*r))
            print(f"{name:<10} over {len(r)} seed(s): median total {np.median(t):.2f}s, median cpu {np.median(cpu):.2f}s, "
                  f"KL mean {kl.mean():.3f} (min {kl.min():.3f}, max {kl.max():.3f}), hit min {hit.min()}")
    if rows["reference"]:
        for i, what in ((0, "wall"), (1, "cpu")):
            ratio = np.median([r[i] for r in rows["reference"]]) / np.median([r[i] for r in rows["ours"]])
            print(f"speed-up, {what} (reference median / ours median): {ratio:.1f}x")
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
