"""shard@<shift>: the curated index -> WebDataset tar shards + sizes.json under data/shards/<shift>."""
import argparse
from pathlib import Path

import numpy as np

from selectbench import shards
from selectbench.common import get, load_params, read_index, stage_main, write_json
from selectbench.context import image_arrays


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.shard")
    ap.add_argument("shift")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    per_shard = get(p, "shard.samples_per_shard", int, lo=1)
    seed = get(p, "shard.seed", int)
    curated = Path(f"data/curated/{args.shift}")
    index = read_index(curated / "index.parquet")
    arrays = image_arrays(index, curated)
    # Shuffle once so every shard mixes classes; training adds its own shard + buffer shuffle.
    order = np.random.default_rng(seed).permutation(len(index))
    src, rows, labels = index["source"].to_numpy(), index["row"].to_numpy(), index["label"].to_numpy()
    ids, scores = index["sample_id"].to_numpy(), index["score"].to_numpy()

    def samples():
        for j, i in enumerate(order):
            meta = {"sample_id": str(ids[i]), "source": str(src[i]), "score": float(scores[i])}
            yield f"{j:08d}", arrays[src[i]][rows[i]], int(labels[i]), meta

    sizes = shards.write_shards(samples(), f"data/shards/{args.shift}", per_shard, total=len(index))
    write_json(f"data/shards/{args.shift}/summary.json", {"samples": int(sum(sizes.values())), "shards": len(sizes)})
    print(f"shard@{args.shift}: {sum(sizes.values())} samples in {len(sizes)} shards")


if __name__ == "__main__":
    main()
