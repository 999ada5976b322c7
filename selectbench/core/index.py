"""The curated-index contract: one row per training item, (sample_id, source, label, score, row)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from selectbench.core.errors import UserError
from selectbench.core.io import atomic_path

# A curated shift is an index with exactly these columns (extra columns are allowed after them).
INDEX_COLUMNS = {"sample_id": "string", "source": "string", "label": "int64", "score": "float32"}


def make_index(sample_id, source, label, score, **extra) -> pd.DataFrame:
    df = pd.DataFrame({"sample_id": sample_id, "source": source, "label": label, "score": score, **extra})
    return df.astype(INDEX_COLUMNS)


def gather(index: pd.DataFrame, getters: dict, what: str) -> np.ndarray | None:
    """Per-item values in index order from per-source lookups: getters[source](rows) -> array.

    One place knows that an index row means (source, row); None for an empty index."""
    src, rows = index["source"].to_numpy(), index["row"].to_numpy()
    out = None
    for s in pd.unique(src):
        if s not in getters:
            raise UserError(f"{what}: unknown source {s!r} (known: {', '.join(getters)})")
        m = src == s
        part = np.asarray(getters[s](rows[m]))
        if out is None:
            out = np.empty((len(index),) + part.shape[1:], dtype=part.dtype)
        out[m] = part
    return out


def write_index(df: pd.DataFrame, path: str | os.PathLike) -> None:
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"index lacks columns {missing}")
    df = df.astype(INDEX_COLUMNS).reset_index(drop=True)
    # Fixed writer settings so the same rows give the same bytes (DVC hashes them).
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, compression="zstd", engine="pyarrow")


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    df = pd.read_parquet(path)
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: not a curated index (lacks {missing})")
    return df
