"""train_generator: a small pixel-space diffusion model (diffusers UNet2DConditionModel) trained on the
pool's image-caption pairs, conditioned on the embedder's text tower the way Stable Diffusion
conditions on CLIP text, and on a share of items (generator.p_image) on the image's own CLIP
embedding instead, the way the SD image-variations model does. Full profile: records the local
Stable Diffusion and image-variations weights to use."""
import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from selectbench.core import layout
from selectbench.core.errors import fail
from selectbench.core.io import write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, record_pretrained, stage_main
from selectbench.core.runtime import live as live_logger
from selectbench.models import embedder, generator, generator_train


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.train_generator")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.GENERATOR))
    args = ap.parse_args(argv)
    limit_threads(all_threads())  # no worker processes: both cores compute
    p = load_params(args.params)
    out = Path(args.out)
    kind = get(p, "generator.kind", str, choices=("trained", "pretrained"))
    if out.exists():
        shutil.rmtree(out)
    if kind == "pretrained":
        model_dir = get(p, "generator.pretrained.model", str)
        if not Path(model_dir).exists():
            raise fail("generator.pretrained.model", f"directory not found: {model_dir}")
        variation = get(p, "generator.pretrained.variation", (str, type(None)))
        if variation is not None and not Path(variation).exists():
            raise fail("generator.pretrained.variation", f"directory not found: {variation}")
        out.mkdir(parents=True)
        write_json(out / "config.json", {"kind": "pretrained", "model": model_dir, "variation": variation})
        layout.checkpoints("generator").mkdir(parents=True, exist_ok=True)
        record_pretrained("train_generator", model=model_dir)
        return
    steps = get(p, "generator.steps", int, lo=1)
    emb = embedder.load(layout.EMBEDDER)
    images = np.load(layout.POOL / "images.npy")
    meta = pd.read_parquet(layout.POOL_META, columns=["sample_id", "caption"])
    captions = meta["caption"].tolist()
    ids = pd.read_parquet(layout.embedding_ids("pool_img"))["sample_id"]
    if not ids.equals(meta["sample_id"]):
        raise fail(str(layout.embedding("pool_img")), "rows are not in the pool's order (rerun the embed stage)")
    image_emb = np.load(layout.embedding("pool_img")).astype(np.float32)

    t = time.perf_counter()
    with live_logger("train_generator") as live:
        def log(step, loss):
            if step % 10 == 0 or step == steps - 1:
                live.step = step + 1
                live.log_metric("loss", loss)
        model = generator_train.train_generator(
            images, captions, emb.text_hidden, emb.text_width, steps=steps,
            batch_size=get(p, "generator.batch_size", int, lo=1), lr=get(p, "generator.lr", float, lo=0.0),
            seed=get(p, "generator.seed", int), p_uncond=get(p, "generator.p_uncond", float, lo=0.0, hi=1.0),
            image_emb=image_emb, p_image=get(p, "generator.p_image", float, lo=0.0, hi=1.0),
            unet_cfg=get(p, "generator.unet", dict), log=log, ckpt_dir=layout.checkpoints("generator"),
            ckpt_every=get(p, "generator.ckpt_every", int, lo=0))
    generator.save_generator(model, out)
    for f in layout.checkpoints("generator").glob("*"):
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    wall = time.perf_counter() - t
    write_json(layout.cost("train_generator"), {"wall_s": round(wall, 2), "steps": steps})
    print(f"train_generator: {steps} steps in {wall:.0f}s -> {out}")


if __name__ == "__main__":
    main()
