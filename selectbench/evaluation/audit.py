"""The audit stage's library: fingerprints of every evaluation set and of a shift's items, and the
flagged items of a shift (selectbench.evaluation.contamination does the comparing).

Embeddings come from the curation embedder's image tower: the audit finds copies, it scores no
shift, so using the selecting encoder here judges nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd

from selectbench.core import layout
from selectbench.core.images import open_images, take
from selectbench.curation.context import Context, Curated, embeddings_of, image_arrays
from selectbench.evaluation import contamination as C

FLAG_COLUMNS = {"position": "int64", "sample_id": "string", "set": "string", "detectors": "string",
                "cosine": "float32", "hamming": "int64", "eval_item": "int64"}


def evaluation_sets(ctx: Context, tasks: list[str], batch: int) -> dict[str, C.Fingerprints]:
    """Every image a model is scored on: the base test split, its corrupted subset, the natural
    set and each transfer task's test split (`task:<name>`)."""
    enc = ctx.embedder

    def fp(images, emb=None):
        return C.Fingerprints.of(images, enc.encode_images(images, batch) if emb is None else emb)

    sets = {"test": fp(open_images("test"), ctx.emb("test_img"))}
    with np.load(layout.CORRUPTED / "corrupted.npz") as z:
        sets["corrupted"] = fp(z["images"])
    sets["natural"] = fp(open_images("natural"))
    for t in tasks:
        with np.load(layout.task(t)) as z:
            sets[f"task:{t}"] = fp(z["test_x"])
    return sets


def shift_fingerprints(ctx: Context, index: pd.DataFrame, curated_dir, chunk: int = 2048):
    """(fingerprints of a curated index's items in index order, decodable [N] bool)."""
    n = len(index)
    hashes = np.zeros((n, C.HASH_BYTES), dtype=np.uint8)
    digests = np.empty(n, dtype=object)
    ok = np.zeros(n, dtype=bool)
    if n == 0:
        return C.Fingerprints(np.zeros((0, 1), np.float32), hashes, digests), ok
    arrays = image_arrays(index, curated_dir)
    src, rows = index["source"].to_numpy(), index["row"].to_numpy()
    for s in pd.unique(src):
        pos = np.flatnonzero(src == s)
        for i in range(0, len(pos), chunk):
            p = pos[i:i + chunk]
            imgs, good = take(arrays[s], rows[p])  # undecodable rows come back black, good False
            hashes[p] = C.dhash(imgs)
            digests[p] = C.digests(imgs)
            ok[p] = good
    digests[~ok] = b""
    emb = embeddings_of(ctx, Curated(index, arrays.get("generated")))
    return C.Fingerprints(emb, hashes, digests), ok


def audit_shift(fp: C.Fingerprints, ok: np.ndarray, ids: np.ndarray, sets: dict[str, C.Fingerprints],
                thresholds: dict[str, C.Thresholds]) -> tuple[pd.DataFrame, dict]:
    """(one row per flagged (item, evaluation set), counts per set and detector). An item that
    could not be decoded is never flagged (it is never trained on either)."""
    rows, counts = [], {}
    for name, ref in sets.items():
        near = C.nearest(fp, ref)
        f = {k: v & ok for k, v in C.flags(near, thresholds[name]).items()}
        counts[name] = {k: int(v.sum()) for k, v in f.items()}
        for i in np.flatnonzero(f["any"]):
            det = [k for k in ("exact", "hash", "cosine") if f[k][i]]
            item = near["exact_item"][i] if f["exact"][i] else near[f"{'hamming' if f['hash'][i] else 'cosine'}_item"][i]
            rows.append((int(i), str(ids[i]), name, ",".join(det), float(near["cosine"][i]), int(near["hamming"][i]),
                         int(item)))
    df = pd.DataFrame(rows, columns=list(FLAG_COLUMNS)).astype(FLAG_COLUMNS)
    return df, counts
