"""embed: float16 embeddings of base train/test images, pool images and captions, and class
definitions; one .npy per kind with an id parquet in the same row order.

Images come through selectbench.images, so the same code embeds the embedded profile's arrays and
the full profile's ImageNet files. Pool rows from LAION keep LAION's released CLIP embeddings (the
embedder must be the model that made them: the dimensions are checked); other rows are embedded.
With embed.nproc > 1 the ranks split the batches (batch b on rank b % world, the same items in a
batch for any world size) and rank 0 writes the bytes one process writes."""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from selectbench.core import layout
from selectbench.core.arrays import unit_rows
from selectbench.core.classes import load as load_classes
from selectbench.core.comm import LOCAL, Local, map_rows
from selectbench.core.errors import UserError
from selectbench.core.images import Subset, base_name, is_lazy, open_images
from selectbench.core.io import atomic_save_npy, write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import finish_distributed, stage_main, start_ranks
from selectbench.models import embedder


def _save(out: Path, kind: str, emb: np.ndarray, ids: list[str]) -> None:
    atomic_save_npy(out / layout.embedding(kind).name, emb.astype(np.float16))
    pd.DataFrame({"sample_id": ids}).to_parquet(out / layout.embedding_ids(kind).name, index=False, compression="zstd")


def encode(fn, items, batch: int, dim: int, comm: Local = LOCAL, desc: str | None = None) -> np.ndarray | None:
    """fn(items[s:e]) over the batches of items, split over comm's ranks: the rows on rank 0, None elsewhere."""
    return map_rows(lambda s, e: fn(items[s:e], batch), len(items), batch, comm, desc, dim)


def pool_embeddings(emb: embedder.Embedder, meta: pd.DataFrame, batch: int,
                    comm: Local = LOCAL) -> tuple[np.ndarray, np.ndarray] | None:
    """(image, caption) embeddings of every pool row, on rank 0 (None on the others)."""
    images = open_images("pool")
    laion = images.parts.get("laion") if is_lazy(images) else None
    given = (meta["origin"] == "laion").to_numpy() if laion is not None else np.zeros(len(meta), bool)
    if given.any():
        for kind in ("img", "text"):
            if laion.dims.get(kind) != emb.dim:
                raise UserError(f"LAION {kind} embeddings have dim {laion.dims.get(kind)}, the embedder {emb.dim}: "
                                "set embedder.pretrained to the CLIP model that made them")
    rest = np.flatnonzero(~given)
    if len(rest):  # every rank encodes its batches; only rank 0 reads LAION's own embeddings below
        got_img = encode(emb.encode_images, Subset(images, rest), batch, emb.dim, comm, "embed pool images")
        got_txt = encode(emb.encode_texts, meta["caption"].to_numpy()[rest].tolist(), batch, emb.dim, comm,
                         "embed pool captions")
    if comm.rank != 0:
        return None
    img = np.empty((len(meta), emb.dim), dtype=np.float32)
    txt = np.empty((len(meta), emb.dim), dtype=np.float32)
    if given.any():
        rows = meta["origin_row"].to_numpy()[given]
        for kind, out in (("img", img), ("text", txt)):
            out[given] = unit_rows(laion.embeddings(kind, rows))
    if len(rest):
        img[rest], txt[rest] = got_img, got_txt
    return img, txt


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.embed")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.EMBEDDINGS))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    p = load_params(args.params)
    batch = get(p, "embed.batch_size", int, lo=1)
    comm = start_ranks(get(p, "embed.nproc", int, lo=1), "stages.embed", ["--params", args.params, "--out", args.out])
    rank, world = comm.rank, comm.world
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    emb = embedder.load(layout.EMBEDDER)
    base = base_name()
    for split in ("train", "test"):
        e = encode(emb.encode_images, open_images(split), batch, emb.dim, comm, f"embed {split} images")
        if rank == 0:
            _save(out, f"{split}_img", e, [f"{base}_{split}:{i}" for i in range(len(e))])
    cols = [c for c in ("sample_id", "caption", "origin", "origin_row")
            if c in pq.ParquetFile(layout.POOL_META).schema_arrow.names]
    meta = pd.read_parquet(layout.POOL_META, columns=cols)
    pool = pool_embeddings(emb, meta, batch, comm)
    classes = list(load_classes().entries)
    defs = encode(emb.encode_texts, [c["definition"] for c in classes], batch, emb.dim, comm)
    if rank != 0:
        finish_distributed(world)
        return
    ids = meta["sample_id"].tolist()
    _save(out, "pool_img", pool[0], ids)
    _save(out, "pool_txt", pool[1], ids)
    _save(out, "class_txt", defs, [f"class:{i}" for i in range(len(classes))])
    write_json(out / "summary.json", {"dim": emb.dim, "pool": len(ids)})
    # Apart from the content-hashed outputs, so that timings never change them (the report's cost model).
    write_json(layout.cost("embed"), {"wall_s": round(time.perf_counter() - t0, 2), "pool": len(ids)})
    print(f"embed: dim {emb.dim}, pool {len(ids)} -> {out}{f' ({world} ranks)' if world > 1 else ''}")
    finish_distributed(world)


if __name__ == "__main__":
    main()
