"""train_embedder: a small open_clip model trained contrastively on the pool's image-caption pairs
(embedded default), or a pointer to pretrained open_clip weights (full profile)."""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from selectbench.core import layout
from selectbench.core.io import write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, record_pretrained, seed_everything, stage_main
from selectbench.core.runtime import live as live_logger
from selectbench.models import embedder


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.train_embedder")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.EMBEDDER))
    args = ap.parse_args(argv)
    limit_threads(all_threads())  # no worker processes: both cores compute
    p = load_params(args.params)
    out = Path(args.out)
    kind = get(p, "embedder.kind", str, choices=("trained", "pretrained"))
    if kind == "pretrained":
        name, weights = get(p, "embedder.pretrained.model", str), get(p, "embedder.pretrained.weights", str)
        embedder.load_pretrained(name, weights)  # fail now, not three stages later
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {"kind": "pretrained", "model": name, "weights": weights})
        record_pretrained("train_embedder", model=name)
        return
    steps = get(p, "embedder.steps", int, lo=1)
    seed = get(p, "embedder.seed", int)
    arch = get(p, "embedder.arch", dict)
    seed_everything(seed)
    images = np.load(layout.POOL / "images.npy")
    captions = pd.read_parquet(layout.POOL_META, columns=["caption"])["caption"].tolist()

    t = time.perf_counter()
    with live_logger("train_embedder") as live:
        def log(step, loss):
            if step % 10 == 0 or step == steps - 1:
                live.log_metric("loss", loss)
                live.step = step + 1
        model = embedder.train(images, captions, arch, steps=steps, batch_size=get(p, "embedder.batch_size", int, lo=2),
                               lr=get(p, "embedder.lr", float, lo=0.0), seed=seed, log=log)
    embedder.save(model, arch, out)
    write_json(layout.cost("train_embedder"), {"wall_s": round(time.perf_counter() - t, 2), "steps": steps,
                                                    "pairs": int(len(images))})
    print(f"train_embedder: {steps} steps on {len(images)} pairs in {time.perf_counter() - t:.0f}s -> {out}")


if __name__ == "__main__":
    main()
