"""Throughput benchmarks (not tests): each against the plain alternative, in the same run.

Usage (after `dvc repro`, inside the venv): python -m bench.throughput [--quick]
Prints Markdown tables and writes bench/out/throughput.json.
"""
import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from selectbench.core import shards
from selectbench.core.runtime import limit_threads
from selectbench.curation import strategies
from selectbench.curation.hkm import fit, sample
from selectbench.models import embedder, training


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - t, out


def shard_read(shift="in"):
    """Decoded images/s: the training stream's tar reader vs the webdataset library's reader vs
    one PNG file at a time (best of 3 each, warm page cache)."""
    urls, sizes = shards.shard_urls(f"data/shards/{shift}")
    n = sum(sizes.values())
    import webdataset as wds

    def dec(b):
        return np.asarray(Image.open(io.BytesIO(b)))

    def ours():
        return sum(1 for s in shards.tar_samples(urls) if dec(s["png"]).size)

    def wds_lib():
        return sum(1 for s in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()) if dec(s["png"]).size)

    def best(fn):
        return min(timed(fn)[0] for _ in range(3))

    with tempfile.TemporaryDirectory() as d:
        for key, png, _ in shards.iter_samples(urls):
            Path(d, f"{key}.png").write_bytes(png)
        files = sorted(Path(d).glob("*.png"))
        t_files = best(lambda: sum(1 for f in files if np.asarray(Image.open(f)).size))
    t_ours, t_wds = best(ours), best(wds_lib)
    return {"images": n, "stream_img_s": n / t_ours, "wds_library_img_s": n / t_wds, "loose_files_img_s": n / t_files,
            "ratio": t_files / t_ours}


def knn(n_bank, n_query=2000, dim=64, k=10, seed=0):
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((n_bank, dim)).astype(np.float32)
    q = rng.standard_normal((n_query, dim)).astype(np.float32)
    t_faiss, _ = timed(strategies.knn_search, q, bank, k)

    def brute():
        b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
        qq = q / np.linalg.norm(q, axis=1, keepdims=True)
        out = []
        for i in range(0, len(qq), 256):  # a plain batched matmul + argpartition
            s = qq[i:i + 256] @ b.T
            out.append(np.argpartition(-s, k, axis=1)[:, :k])
        return np.concatenate(out)

    t_np, _ = timed(brute)
    return {"bank": n_bank, "queries": n_query, "faiss_s": t_faiss, "numpy_s": t_np, "ratio": t_np / t_faiss}


def train_speed(shift="in", steps=60):
    p = yaml.safe_load(open("params.yaml"))
    cfg = {**p["train"], "steps": steps, "budget": "steps", "ckpt_every": 0}
    urls, sizes = shards.shard_urls(f"data/shards/{shift}")
    counts = np.ones(10)
    _, summ = training.train(urls, sizes, counts, cfg, None)
    ours = summ["images_per_s"]
    # Minimal plain PyTorch loop on the same shards: decoded into memory first, no augmentation.
    import timm

    data = [(shards.decode_png(png), c) for _, png, c in shards.iter_samples(urls)]
    x = torch.from_numpy(np.stack([d for d, _ in data])).float().div(255).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(cfg["img_size"],) * 2, mode="bilinear")
    y = torch.tensor([c for _, c in data])
    torch.manual_seed(0)
    m = timm.create_model(cfg["model"], num_classes=10, in_chans=1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    bs = cfg["batch_size"]
    t = time.perf_counter()
    for s in range(steps):
        i = torch.randint(0, len(x), (bs,))
        loss = torch.nn.functional.cross_entropy(m(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    plain = steps * bs / (time.perf_counter() - t)
    return {"ours_img_s": ours, "plain_loop_img_s": plain, "ratio": ours / plain, "steps": steps}


def scaling(base_n=4000, factors=(1, 4, 16), seed=0):
    """Time embed, search, hierarchical k-means and shard writing at 1x/4x/16x pool sizes."""
    pool = np.load("data/pool/images.npy", mmap_mode="r")
    emb_model = embedder.load("models/embedder")
    rng = np.random.default_rng(seed)
    rows = []
    for f in factors:
        n = base_n * f
        imgs = pool[rng.integers(0, len(pool), n)]
        t_embed, e = timed(emb_model.encode_images, imgs, 1024)
        t_search, _ = timed(strategies.knn_search, e[:2000], e, 10)
        t_hkm, _ = timed(lambda: sample.balanced_sample(fit.fit(e, [max(2, n // 100), max(2, n // 1000)],
                                                                     n_iter=20, resample_steps=2, seed=0), n // 10))
        with tempfile.TemporaryDirectory() as d:
            t_shard, _ = timed(shards.write_shards, ((f"{i:08d}", imgs[i], 0, {}) for i in range(n)),
                               Path(d) / "s", 1000, n)
        rows.append({"n": n, "embed_s": t_embed, "search_s": t_search, "hkm_s": t_hkm, "shard_s": t_shard})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    limit_threads(args.threads)
    res = {"shard_read": shard_read(), "knn": [knn(24_591), knn(245_910)],
           "train": train_speed(steps=30 if args.quick else 60),
           "scaling": scaling(base_n=1000 if args.quick else 4000)}
    out = Path("bench/out/throughput.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    s = res["shard_read"]
    print(f"| shard read (in, {s['images']} imgs) | tar stream {s['stream_img_s']:.0f} img/s "
          f"(webdataset library {s['wds_library_img_s']:.0f}) | loose PNG files {s['loose_files_img_s']:.0f} img/s | "
          f"{s['ratio']:.1f}x |")
    for k in res["knn"]:
        print(f"| kNN top-10, {k['queries']} queries in {k['bank']} | faiss {k['faiss_s']:.2f}s | "
              f"numpy {k['numpy_s']:.2f}s | {k['ratio']:.1f}x |")
    t = res["train"]
    print(f"| training img/s (in shards) | ours {t['ours_img_s']:.0f} | plain loop {t['plain_loop_img_s']:.0f} | "
          f"{t['ratio']:.2f}x |")
    print("\n| pool size | embed s | search s | hkm s | shard s |\n|---|---|---|---|---|")
    for r in res["scaling"]:
        print(f"| {r['n']} | {r['embed_s']:.2f} | {r['search_s']:.2f} | {r['hkm_s']:.2f} | {r['shard_s']:.2f} |")


if __name__ == "__main__":
    main()
