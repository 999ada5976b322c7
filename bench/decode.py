"""Full-profile decode throughput (a benchmark, not a test): how fast selectbench.images turns
ImageNet-sized JPEG files into 224 px RGB arrays, against the plain PIL loop.

Usage (inside the venv): python -m bench.decode [--n 400] [--threads 1 2]
Writes bench/out/decode.json and prints a Markdown table. The images are synthetic photos at
500 x 375 px, ImageNet's most common size, JPEG quality 90.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from selectbench.full.decode import PathSource
from selectbench.full.pointer import LazyImages


def write_photos(root: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:375, 0:500]
    paths = []
    for i in range(n):
        # smooth gradients plus noise: JPEG sizes like a photo's (~40-60 KB), not like flat colour
        base = np.stack([(xx * rng.uniform(0.2, 0.5) + yy * rng.uniform(0.1, 0.4)) % 256] * 3, axis=-1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        p = f"{i:05d}.JPEG"
        Image.fromarray(img).save(root / p, quality=90)
        paths.append(p)
    return paths


def plain(root: Path, paths: list[str], size: int) -> np.ndarray:
    """The obvious loop: full decode, centre square, resize."""
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        im = Image.open(root / p).convert("RGB")
        s = min(im.size)
        left, top = (im.size[0] - s) // 2, (im.size[1] - s) // 2
        out[i] = np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + s, top + s)))
    return out


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        paths = write_photos(root, args.n)
        src = PathSource(root, paths)
        rows = np.arange(args.n)
        res = {"n": args.n, "size": args.size,
               "plain_img_s": args.n / best(lambda: plain(root, paths, args.size))}
        for t in args.threads:
            x = LazyImages({"f": src}, np.full(args.n, "f", dtype=object), rows, args.size, "RGB", workers=t)
            res[f"lazy_{t}_threads_img_s"] = args.n / best(lambda x=x: x.take(rows))
    out = Path("bench/out/decode.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"| reader ({args.n} JPEGs 500x375 -> {args.size} px RGB) | img/s |\n|---|---|")
    print(f"| plain PIL loop (full decode, crop, resize) | {res['plain_img_s']:.0f} |")
    for t in args.threads:
        print(f"| selectbench.images, {t} thread(s) | {res[f'lazy_{t}_threads_img_s']:.0f} |")


if __name__ == "__main__":
    main()
