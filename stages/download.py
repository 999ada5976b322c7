"""download: the base task's train/test labels (+ the base/pool partition) in data/raw.

Embedded profile: Fashion-MNIST images in one compact npz per split. Full profile: ImageNet
train/val read where they are, through a pointer file per split (selectbench.full)."""
import argparse
from pathlib import Path

import numpy as np
import yaml

from selectbench import full
from selectbench.common import get, load_params, profile, stage_main, write_json
from selectbench.data import fetch, split_parts


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.download")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/raw")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    if profile(p) == "full":
        with open("data/meta/classes.yaml") as f:
            classes = yaml.safe_load(f)["classes"]
        s = full.build_raw(p, classes, Path(args.out))
        print(f"download: ImageNet {s['train']} train, {s['test']} val (read in place) -> {args.out}")
        return
    source_dir = get(p, "data.source_dir", (str, type(None)))
    url = get(p, "data.url", str)
    reserve = get(p, "data.base_reserve", int, lo=1)
    seed = get(p, "data.seed", int)
    arrays = fetch(source_dir, url, Path("data/tmp/download"))
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
