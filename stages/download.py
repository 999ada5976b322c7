"""download: the base task's train/test labels (+ the base/pool partition) in data/raw.

Embedded profile: Fashion-MNIST images in one compact npz per split. Full profile: ImageNet
train/val read where they are, through a pointer file per split (selectbench.full)."""
import argparse
from pathlib import Path

import numpy as np

from selectbench.core import layout
from selectbench.core.classes import load as load_classes
from selectbench.core.io import write_json
from selectbench.core.params import get, load_params, profile
from selectbench.core.runtime import stage_main
from selectbench.embedded.fmnist import fetch, split_parts
from selectbench.full import build as full


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.download")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.RAW))
    args = ap.parse_args(argv)
    p = load_params(args.params)
    if profile(p) == "full":
        classes = list(load_classes().entries)
        s = full.build_raw(p, classes, Path(args.out))
        bad = "; ".join(f"{k} " + (", ".join(f"{r} {n}" for r, n in v.items()) or "none")
                        for k, v in s["undecodable"].items())
        print(f"download: ImageNet {s['train']} train, {s['test']} val (read in place) -> {args.out}; "
              f"undecodable, left out: {bad}")
        return
    source_dir = get(p, "data.source_dir", (str, type(None)))
    url = get(p, "data.url", str)
    reserve = get(p, "data.base_reserve", int, lo=1)
    seed = get(p, "data.seed", int)
    arrays = fetch(source_dir, url, layout.TMP / "download")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    part = split_parts(arrays["train_labels"], reserve, seed)
    # np.savez (uncompressed) is byte-deterministic; zip timestamps are fixed by numpy.
    np.savez(out / "train.npz", images=arrays["train_images"], labels=arrays["train_labels"].astype(np.int64), part=part)
    np.savez(out / "test.npz", images=arrays["test_images"], labels=arrays["test_labels"].astype(np.int64))
    write_json(out / "summary.json", {
        "train": int(len(part)), "test": int(len(arrays["test_labels"])),
        "base_reserve": int((part == 0).sum()), "pool_available": int((part == 1).sum()),
        "source": source_dir if source_dir and Path(source_dir).exists() else url,
    })
    print(f"download: {len(part)} train ({(part == 0).sum()} reserved for base shifts), "
          f"{len(arrays['test_labels'])} test -> {out}")


if __name__ == "__main__":
    main()
