"""What a curated index points at: the per-source images, embeddings and hidden truth.

An index row is (source, row): `train` rows of the base train split (data/raw), `pool` rows of
data/pool, `generated` rows of the shift's own data/curated/<shift>/generated shards. This module is the
one place that knows it, so the curate, shard and evaluate stages share it; where the pixels of
each source live (arrays or adapters) is selectbench.images' business."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from selectbench.core import layout
from selectbench.core.classes import Classes
from selectbench.core.classes import load as load_classes
from selectbench.core.comm import LOCAL, Local
from selectbench.core.errors import UserError
from selectbench.core.genshards import GeneratedImages
from selectbench.core.images import Subset, base_name, open_images
from selectbench.core.index import gather
from selectbench.core.layout import load_split


@dataclass
class Curated:
    index: pd.DataFrame
    images: np.ndarray | GeneratedImages | None = None  # new images (generated shifts), rows of source 'generated'
    stats: dict = field(default_factory=dict)


@dataclass
class Context:
    """Lazy access to everything a strategy may read, so a stage loads only what it uses."""

    params: dict
    root: Path = Path(".")
    tmp_dir: Path = layout.TMP
    comm: Local = LOCAL  # the ranks a distributed strategy (hkm, generation) splits its work over
    _emb: dict = field(default_factory=dict, init=False, repr=False)

    @cached_property
    def classes(self) -> Classes:
        return load_classes(self.root)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def train(self) -> dict:

        return load_split(self.root / layout.TRAIN_SPLIT)

    @cached_property
    def train_images(self):

        return open_images("train", self.root)

    @cached_property
    def base_name(self) -> str:

        return base_name(self.root)

    @cached_property
    def pool_meta(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / layout.POOL_META)

    @cached_property
    def web_rows(self) -> np.ndarray:
        """Pool rows a web search may return: the full profile's pool also holds the OpenImages
        images behind the crowd labels, which are not part of LAION."""
        meta = self.pool_meta
        if "origin" not in meta:
            return np.arange(len(meta))
        return np.flatnonzero((meta["origin"] != "openimages").to_numpy())

    def emb(self, kind: str) -> np.ndarray:
        """float32 embeddings, loaded once per kind (read-only: callers index, never mutate)."""
        cache = self._emb
        if kind not in cache:
            path = self.root / layout.embedding(kind)
            if not path.exists():
                raise UserError(f"{path}: missing (run the embed stage first)")
            cache[kind] = np.load(path).astype(np.float32)
            cache[kind].setflags(write=False)
        return cache[kind]

    @cached_property
    def embedder(self):
        from selectbench.models import embedder

        return embedder.load(self.root / layout.EMBEDDER)

    @property
    def base_rows(self) -> np.ndarray:
        """Train rows reserved for base-derived shifts (never in the pool)."""
        return np.flatnonzero(self.train["part"] == 0)


def embeddings_of(ctx: Context, cur: Curated) -> np.ndarray:
    """Embeddings of an index's items (generated ones are embedded on the fly)."""
    emb = gather(cur.index, {"train": lambda r: ctx.emb("train_img")[r], "pool": lambda r: ctx.emb("pool_img")[r],
                             "generated": lambda r: ctx.embedder.encode_images(Subset(cur.images, r))}, "embeddings")
    return np.empty((0, 1), dtype=np.float32) if emb is None else emb.astype(np.float32, copy=False)


def truth_of(ctx: Context, index: pd.DataFrame) -> np.ndarray:
    """The hidden true class of each item where the simulation knows it, else -2 (generated)."""
    t = gather(index, {"train": lambda r: ctx.train["labels"][r], "pool": lambda r: ctx.pool_meta["true_label"].to_numpy()[r],
                       "generated": lambda r: np.full(len(r), -2)}, "truth")
    return np.empty(0, dtype=np.int64) if t is None else t.astype(np.int64)


def image_arrays(index: pd.DataFrame, curated_dir: Path, root: Path = Path(".")) -> dict:
    """The image set (array or lazy adapter view, selectbench.images) of each source in the index."""

    sources = index["source"].unique()
    unknown = sorted(set(sources) - {"train", "pool", "generated"})
    if unknown:
        raise UserError(f"unknown source {unknown[0]!r} in {curated_dir}/index.parquet")
    return {s: open_images(s, root, curated_dir) for s in sources}
