"""Distributed hierarchical k-means on this machine: 1 rank against 2 (torchrun, gloo), same data.

Two measurements, each under `torchrun --nproc-per-node W` for W in --worlds:
- one Lloyd iteration (the unit of the cost model in docs/scaling.md): every rank assigns its
  N / W rows to K centroids and sums them per centroid, then one all-reduce of the K x D sums and
  K counts; the median of --reps iterations, with the all-reduce timed on its own;
- a whole `python -m selectbench.curation.hkm` fit on the same rows (the tree is checked equal).
Each rank runs one BLAS thread, so W ranks use W cores. Writes bench/out/hkm_distributed.json.

    python -m bench.hkm_distributed            # ~2 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _data(path: Path, n: int, d: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, d)).astype(np.float32) * 3
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, d)).astype(np.float32)
    np.save(path, x.astype(np.float32))


def worker(emb: str, k: int, reps: int, out: str) -> None:
    """One rank: timed Lloyd iterations over its block of the rows."""
    from threadpoolctl import threadpool_limits

    from selectbench.core.comm import LOCAL, Dist, shard_range
    from selectbench.core.runtime import finish_distributed, init_distributed
    from selectbench.curation.hkm.kmeans import _Assigner, _update_centroids

    rank, world = init_distributed()
    comm = Dist() if world > 1 else LOCAL
    x_all = np.load(emb, mmap_mode="r")
    lo, hi = shard_range(len(x_all), rank, world)
    x = np.ascontiguousarray(x_all[lo:hi], dtype=np.float32)
    cent = np.asarray(x_all[np.random.default_rng(1).choice(len(x_all), k, replace=False)], dtype=np.float32)
    with threadpool_limits(1):
        assign = _Assigner(x.shape[1], 65536, False)
        iters, reduces = [], []
        for _ in range(reps):
            if world > 1:
                import torch.distributed as dist

                dist.barrier()
            t0 = time.perf_counter()
            labels, _ = assign.partial(x, cent)
            cent = _update_centroids(x, labels, cent, 65536, comm)
            iters.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            comm.sum(np.zeros((k, x.shape[1]), dtype=np.float64))  # the all-reduce alone, same size
            reduces.append(time.perf_counter() - t1)
    if rank == 0:
        Path(out).write_text(json.dumps({"iteration_s": float(np.median(iters)),
                                         "allreduce_s": float(np.median(reduces)), "rows_per_rank": hi - lo}))
    finish_distributed(world)


def _torchrun(world: int, args: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                    *args], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.hkm_distributed")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=1000, help="clusters of the timed Lloyd iteration")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--levels", default="500,25", help="the whole fit's levels")
    ap.add_argument("--worlds", default="1,2")
    ap.add_argument("--worker", nargs=4, metavar=("EMB", "K", "REPS", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a.worker[0], int(a.worker[1]), int(a.worker[2]), a.worker[3])
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "hkm_distributed"
    tmp.mkdir(exist_ok=True)
    emb = tmp / "x.npy"
    _data(emb, a.n, a.dim)
    res = {"n": a.n, "dim": a.dim, "k": a.k, "levels": a.levels, "cpu": _cpu(),
           "cores": os.cpu_count(), "worlds": {}}
    trees = {}
    for w in (int(v) for v in a.worlds.split(",")):
        it = tmp / f"iter{w}.json"
        _torchrun(w, ["bench/hkm_distributed.py", "--worker", str(emb), str(a.k), str(a.reps), str(it)])
        rec = json.loads(it.read_text())
        flop = 2.0 * rec["rows_per_rank"] * a.k * a.dim
        rec["gflops_per_rank"] = flop / (rec["iteration_s"] - rec["allreduce_s"]) / 1e9
        fit_dir = tmp / f"fit{w}"
        wall = _torchrun(w, ["-m", "selectbench.curation.hkm", str(emb), "--select", "10000", "--levels", a.levels,
                             "--n-iter", "10", "--resample-steps", "2", "--out", str(fit_dir), "--no-progress",
                             "--threads", "1"])
        summ = json.loads((fit_dir / "summary.json").read_text())
        rec.update(fit_s=summ["seconds"]["fit"], fit_wall_s=round(wall, 2))
        trees[w] = np.load(fit_dir / "tree.npz")
        res["worlds"][w] = rec
        print(f"world {w}: Lloyd iteration {rec['iteration_s']:.3f}s (all-reduce {rec['allreduce_s'] * 1e3:.1f} ms, "
              f"{rec['gflops_per_rank']:.1f} GFLOP/s per rank); fit {rec['fit_s']:.1f}s", flush=True)
    ws = sorted(trees)
    res["same_labels"] = all(np.array_equal(trees[ws[0]][f"assignment_{t}"], trees[w][f"assignment_{t}"])
                             for w in ws[1:] for t in range(int(trees[w]["n_levels"])))
    out = OUT / "hkm_distributed.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"labels identical across worlds: {res['same_labels']} -> {out}")


if __name__ == "__main__":
    main()
