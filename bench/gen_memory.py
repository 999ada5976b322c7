"""Peak memory of generation against the number of images: 4x more images must not raise the peak
(RSS) by 10% or more, since images stream into shards (selectbench.core.genshards).

Each measurement is a fresh process (ru_maxrss is a high-water mark):
- `store`: genshards.write with a synthetic 224 px RGB batch maker (64 per batch, the full
  profile's image size), N and 4N images; and, for contrast, the same images kept in memory;
- `generator`: the pipeline's trained diffusion model (models/generator, run `dvc repro
  train_generator` first) through sampling.txt2img into shards, N and 4N images, 2 steps.
Writes bench/out/gen_memory.json.

    python -m bench.gen_memory          # ~1 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def _synthetic(start: int, end: int) -> np.ndarray:
    """Smooth 224 px RGB images that depend on the item index (PNG-compressible like photos, not noise)."""
    ramp = np.linspace(0, 1, 224, dtype=np.float32)
    out = np.empty((end - start, 224, 224, 3), dtype=np.uint8)
    for j, i in enumerate(range(start, end)):
        phase = (i * 0.61803) % 1.0
        out[j, :, :, 0] = (255 * ((ramp[None, :] + phase) % 1.0)).astype(np.uint8)
        out[j, :, :, 1] = (255 * ((ramp[:, None] * (1 + i % 3)) % 1.0)).astype(np.uint8)
        out[j, :, :, 2] = (i * 37) % 256
    return out


def measure(kind: str, n: int, store: str) -> dict:
    """In this process: generate n images, return the peak RSS in MiB."""
    from selectbench.core import genshards

    if kind in ("store", "memory"):
        if kind == "store":
            genshards.write(n, 64, _synthetic, store, fingerprint={"bench": "synthetic"})
        else:
            kept = [_synthetic(s, min(n, s + 64)) for s in range(0, n, 64)]
            assert sum(len(k) for k in kept) == n
    else:
        from selectbench.core import layout
        from selectbench.models import embedder, generator, sampling

        model = generator.load_generator(ROOT / layout.GENERATOR)
        enc = embedder.load(ROOT / layout.EMBEDDER)
        out = sampling.txt2img(model, enc.text_hidden, ["a photo of a coat"] * n, seed=0, steps=2, batch_size=250,
                               progress=False, resume_dir=store)
        assert len(out) == n
    return {"kind": kind, "images": n, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.gen_memory")
    ap.add_argument("--n", type=int, default=1000, help="the smaller count; the larger is 4x")
    ap.add_argument("--n-generator", type=int, default=500)
    ap.add_argument("--one", nargs=3, metavar=("KIND", "N", "STORE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(measure(a.one[0], int(a.one[1]), a.one[2])))
        return
    rows = []
    for kind, n in (("store", a.n), ("memory", a.n), ("generator", a.n_generator)):
        for m in (n, 4 * n):
            tmp = tempfile.mkdtemp()
            try:
                r = subprocess.run([sys.executable, "-m", "bench.gen_memory", "--one", kind, str(m), tmp],
                                   capture_output=True, text=True, check=True, cwd=ROOT)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"{kind:9s} {m:6d} images: peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    for kind in ("store", "memory", "generator"):
        small, big = [r for r in rows if r["kind"] == kind]
        print(f"{kind}: 4x images -> peak RSS x{big['peak_rss_mib'] / small['peak_rss_mib']:.3f}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gen_memory.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
