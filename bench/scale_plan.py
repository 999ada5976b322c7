"""Measurements behind docs/scaling.md (the full-profile plan): what can be measured on this
machine at small size and extrapolated with a stated model.

1. faiss index for LAION-scale kNN / text search: bytes per vector and search speed of an
   IVF-PQ index against an exact flat index on the same synthetic 512-d CLIP-like vectors, and
   the recall@10 the compression costs.
2. k-means assignment throughput (the cost of every Lloyd and resampling step of hierarchical
   k-means): achieved GFLOP/s of faiss's exact assignment at D=512.
3. Shard writing: bytes per sample and samples/s at the full profile's stored size.

Usage (inside the venv; ~2 min): python -m bench.scale_plan [--threads 1]
Writes bench/out/scale_plan.json and prints the figures docs/scaling.md quotes.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from selectbench.core import shards
from selectbench.core.runtime import limit_threads


def clip_like(n: int, d: int, rng: np.random.Generator, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around a few thousand concept centres (real CLIP embeddings are clustered;
    isotropic Gaussians would be the worst case for PQ)."""
    noise = 0.5 / np.sqrt(centers.shape[1])  # per-dimension: within-concept distances well below between-concept ones
    concept = rng.integers(0, len(centers), n)
    x = centers[concept] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), concept


def faiss_index(n_train=20_000, n_base=200_000, n_query=1_000, d=512, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2_000, d)).astype(np.float32) / np.sqrt(d)
    base, base_c = clip_like(n_base, d, rng, centers)
    query, query_c = clip_like(n_query, d, rng, centers)
    flat = faiss.IndexFlatIP(d)
    flat.add(base)
    t = time.perf_counter()
    _, truth = flat.search(query, 10)
    t_flat = time.perf_counter() - t
    # 64-byte codes; at 400M vectors the list count would be ~65k (training cost grows with it).
    spec = "IVF256,PQ64"
    ivf = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    ivf.train(clip_like(n_train, d, rng, centers)[0])
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    ivf.add(base)
    t_add = time.perf_counter() - t
    out = {"spec": spec, "d": d, "base": n_base, "queries": n_query, "flat_bytes_per_vector": d * 4,
           "flat_search_s": t_flat, "ivfpq_train_s": t_train, "ivfpq_add_s": t_add,
           "ivfpq_bytes_per_vector": len(faiss.serialize_index(ivf)) / n_base,
           # share of returned neighbours from the query's own concept: what label transfer needs
           "flat_concept_precision": float((base_c[truth] == query_c[:, None]).mean())}
    for nprobe in (16, 64):
        ivf.nprobe = nprobe
        t = time.perf_counter()
        _, got = ivf.search(query, 10)
        dt = time.perf_counter() - t
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
        out[f"nprobe{nprobe}"] = {"search_s": dt, "queries_per_s": n_query / dt, "recall_at_10": float(recall),
                                  "concept_precision": float((base_c[got] == query_c[:, None]).mean())}
    return out


def assignment(n=50_000, k=1_000, d=512, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    c = rng.standard_normal((k, d)).astype(np.float32)
    index = faiss.IndexFlatL2(d)
    index.add(c)
    index.search(x[:1000], 1)  # warm-up
    t = time.perf_counter()
    index.search(x, 1)
    dt = time.perf_counter() - t
    return {"n": n, "k": k, "d": d, "seconds": dt, "gflop_s": 2 * n * k * d / dt / 1e9}


def shard_write(n=2_000, size=192, seed=0) -> dict:
    """Random-noise RGB images are incompressible; real photos as PNG are ~2-3x smaller, as JPEG
    (what the full profile should store) ~10x smaller. Reported as an upper bound."""
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (64, 3, 3, 3), dtype=np.uint8)
    imgs = np.stack([np.kron(smooth[i % 64], np.ones((size // 3, size // 3, 1), np.uint8)) for i in range(n)])
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        shards.write_shards(((f"{i:08d}", imgs[i], 0, {}) for i in range(n)), Path(d) / "s", 1000, n)
        dt = time.perf_counter() - t
        nbytes = sum(f.stat().st_size for f in (Path(d) / "s").glob("*.tar"))
    return {"images": n, "size": size, "samples_per_s": n / dt, "bytes_per_sample": nbytes / n}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.scale_plan")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    limit_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    res = {"threads": args.threads, "loadavg_start": os.getloadavg()[0]}
    res["faiss"] = faiss_index()
    res["assignment"] = assignment()
    res["shard_write"] = shard_write()
    res["loadavg_end"] = os.getloadavg()[0]
    out = Path("bench/out/scale_plan.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    f = res["faiss"]
    print(f"faiss D={f['d']} N={f['base']}: flat {f['flat_bytes_per_vector']} B/vector, "
          f"{f['base'] * f['queries'] / f['flat_search_s'] / 1e6:.0f} M vector-comparisons/s; "
          f"{f['spec']} {f['ivfpq_bytes_per_vector']:.1f} B/vector, train {f['ivfpq_train_s']:.1f}s, "
          f"add {f['base'] / f['ivfpq_add_s']:.0f} vectors/s")
    for p in (16, 64):
        g = f[f"nprobe{p}"]
        print(f"  nprobe {p}: {g['queries_per_s']:.0f} queries/s, recall@10 {g['recall_at_10']:.3f}, "
              f"concept precision {g['concept_precision']:.3f} (flat {f['flat_concept_precision']:.3f})")
    a = res["assignment"]
    print(f"assignment N={a['n']} K={a['k']} D={a['d']}: {a['seconds']:.2f}s = {a['gflop_s']:.0f} GFLOP/s")
    s = res["shard_write"]
    print(f"shard write {s['size']}px RGB: {s['samples_per_s']:.0f} samples/s, {s['bytes_per_sample'] / 1024:.1f} KiB/sample")
    print(f"threads {args.threads}, load average {res['loadavg_start']:.1f} -> {res['loadavg_end']:.1f}")


if __name__ == "__main__":
    main()
