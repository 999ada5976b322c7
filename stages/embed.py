"""embed: float16 embeddings of base train/test images, pool images and captions, and class
definitions; one .npy per kind with an id parquet in the same row order.

Images come through selectbench.images, so the same code embeds the embedded profile's arrays and
the full profile's ImageNet files. Pool rows from LAION keep LAION's released CLIP embeddings (the
embedder must be the model that made them: the dimensions are checked); other rows are embedded."""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from selectbench.core import layout
from selectbench.core.arrays import unit_rows
from selectbench.core.classes import load as load_classes
from selectbench.core.errors import UserError
from selectbench.core.images import Subset, base_name, is_lazy, open_images
from selectbench.core.io import atomic_save_npy, write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, stage_main
from selectbench.models import embedder


def _save(out: Path, kind: str, emb: np.ndarray, ids: list[str]) -> None:
    atomic_save_npy(out / layout.embedding(kind).name, emb.astype(np.float16))
    pd.DataFrame({"sample_id": ids}).to_parquet(out / layout.embedding_ids(kind).name, index=False, compression="zstd")


def pool_embeddings(emb: embedder.Embedder, meta: pd.DataFrame, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, caption) embeddings of every pool row."""
    images = open_images("pool")
    laion = images.parts.get("laion") if is_lazy(images) else None
    given = (meta["origin"] == "laion").to_numpy() if laion is not None else np.zeros(len(meta), bool)
    img = np.empty((len(meta), emb.dim), dtype=np.float32)
    txt = np.empty((len(meta), emb.dim), dtype=np.float32)
    if given.any():
        rows = meta["origin_row"].to_numpy()[given]
        for kind, out in (("img", img), ("text", txt)):
            if laion.dims.get(kind) != emb.dim:
                raise UserError(f"LAION {kind} embeddings have dim {laion.dims.get(kind)}, the embedder {emb.dim}: "
                                "set embedder.pretrained to the CLIP model that made them")
            out[given] = unit_rows(laion.embeddings(kind, rows))
    rest = np.flatnonzero(~given)
    if len(rest):
        img[rest] = emb.encode_images(Subset(images, rest), batch, desc="embed pool images")
        txt[rest] = emb.encode_texts(meta["caption"].to_numpy()[rest].tolist(), batch, desc="embed pool captions")
    return img, txt


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.embed")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.EMBEDDINGS))
    args = ap.parse_args(argv)
    limit_threads(all_threads())  # no worker processes: both cores compute
    t0 = time.perf_counter()
    p = load_params(args.params)
    batch = get(p, "embed.batch_size", int, lo=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    emb = embedder.load(layout.EMBEDDER)
    base = base_name()
    for split in ("train", "test"):
        e = emb.encode_images(open_images(split), batch, desc=f"embed {split} images")
        _save(out, f"{split}_img", e, [f"{base}_{split}:{i}" for i in range(len(e))])
    cols = [c for c in ("sample_id", "caption", "origin", "origin_row")
            if c in pq.ParquetFile(layout.POOL_META).schema_arrow.names]
    meta = pd.read_parquet(layout.POOL_META, columns=cols)
    img, txt = pool_embeddings(emb, meta, batch)
    ids = meta["sample_id"].tolist()
    _save(out, "pool_img", img, ids)
    _save(out, "pool_txt", txt, ids)
    classes = list(load_classes().entries)
    _save(out, "class_txt", emb.encode_texts([c["definition"] for c in classes], batch),
          [f"class:{i}" for i in range(len(classes))])
    write_json(out / "summary.json", {"dim": emb.dim, "pool": len(ids)})
    # Apart from the content-hashed outputs, so that timings never change them (the report's cost model).
    write_json(layout.cost("embed"), {"wall_s": round(time.perf_counter() - t0, 2), "pool": len(ids)})
    print(f"embed: dim {emb.dim}, pool {len(ids)} -> {out}")


if __name__ == "__main__":
    main()
