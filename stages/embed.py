"""embed: float16 embeddings of base train/test images, pool images and captions, and class
definitions; one .npy per kind with an id parquet in the same row order."""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from selectbench import embedder
from selectbench.common import atomic_save_npy, get, load_params, stage_main, write_json
from selectbench.data import load_split


def _save(out: Path, kind: str, emb: np.ndarray, ids: list[str]) -> None:
    atomic_save_npy(out / f"{kind}.npy", emb.astype(np.float16))
    pd.DataFrame({"sample_id": ids}).to_parquet(out / f"{kind}.ids.parquet", index=False, compression="zstd")


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.embed")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/embeddings")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    batch = get(p, "embed.batch_size", int, lo=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    emb = embedder.load("models/embedder")
    for split in ("train", "test"):
        d = load_split(f"data/raw/{split}.npz")
        e = emb.encode_images(d["images"], batch, desc=f"embed {split} images")
        _save(out, f"{split}_img", e, [f"fmnist_{split}:{i}" for i in range(len(e))])
    images = np.load("data/pool/images.npy", mmap_mode="r")
    meta = pd.read_parquet("data/pool/meta.parquet", columns=["sample_id", "caption"])
    ids = meta["sample_id"].tolist()
    _save(out, "pool_img", emb.encode_images(images, batch, desc="embed pool images"), ids)
    _save(out, "pool_txt", emb.encode_texts(meta["caption"].tolist(), batch, desc="embed pool captions"), ids)
    with open("data/meta/classes.yaml") as f:
        classes = yaml.safe_load(f)["classes"]
    _save(out, "class_txt", emb.encode_texts([c["definition"] for c in classes], batch),
          [f"class:{i}" for i in range(len(classes))])
    write_json(out / "summary.json", {"dim": emb.dim, "pool": len(ids)})
    print(f"embed: dim {emb.dim}, pool {len(ids)} -> {out}")


if __name__ == "__main__":
    main()
