"""The dataset-side metrics of one shift (the describe stage's library): no shift model is
involved, so they are computed once per shift, not once per replicate. The one random part, the
SSL kNN bank, is drawn once per replicate with that replicate's seed. The models that compute them
are the judges, which curation never uses."""
from __future__ import annotations

import numpy as np

from selectbench.core import layout
from selectbench.core.classes import load as load_classes
from selectbench.core.errors import fail
from selectbench.core.index import gather, read_index
from selectbench.core.io import read_json
from selectbench.core.layout import load_split
from selectbench.core.params import get, replicates
from selectbench.core.runtime import replicate_seed
from selectbench.curation import context
from selectbench.evaluation import noise
from selectbench.evaluation import utility as E


class ShiftImages:
    """A shift's training images in index order (pool, base or generated), read one slice at a
    time: a full-profile shift does not fit in memory, and predict() needs only len() and slicing."""

    def __init__(self, shift: str, index):
        self.index = index
        self.arrays = context.image_arrays(index, layout.curated(shift))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> np.ndarray:
        sub = self.index.iloc[key]
        imgs = gather(sub, {s: (lambda r, a=a: _read(a, r)) for s, a in self.arrays.items()}, "images")
        return np.zeros((0, 28, 28), np.uint8) if imgs is None else imgs


def _read(images, rows: np.ndarray) -> np.ndarray:
    """images[rows] for any row order, reading in ascending order (what lazy file sets need)."""
    order = np.argsort(rows, kind="stable")
    got = np.asarray(images[rows[order]])
    out = np.empty_like(got)
    out[order] = got
    return out


def save_samples(shift: str, images: "ShiftImages", seed: int, n: int = 8) -> None:
    """A few curated items (image, label, caption) for the report's example grid."""
    index = images.index
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(index), size=min(n, len(index)), replace=False)) if len(index) else np.empty(0, int)
    sub = index.iloc[take]
    imgs = images[take]
    captions = [""] * len(take)
    if (sub["source"] == "pool").any():
        import pandas as pd

        cap = pd.read_parquet(layout.POOL_META, columns=["caption"])["caption"].to_numpy()
        captions = [cap[r] if s == "pool" else "" for s, r in zip(sub["source"], sub["row"])]
    layout.SAMPLES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(layout.samples(shift), images=imgs,
                        labels=sub["label"].to_numpy(), captions=np.array(captions, dtype=str))


def ssl_settings(p: dict, num_classes: int) -> tuple[list[int], list[int]]:
    """evaluate.ssl_shots and evaluate.ssl_k; every k must be below the smallest full bank (shots x
    classes): a k that reaches the bank size votes with the whole bank, so every k >= it gives the
    same number and the setting measures nothing."""
    shots, ks = get(p, "evaluate.ssl_shots", list), get(p, "evaluate.ssl_k", list)
    for key, vals in (("evaluate.ssl_shots", shots), ("evaluate.ssl_k", ks)):
        if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
            raise fail(key, f"expected a non-empty list of positive integers, got {vals!r}")
    bank = min(shots) * num_classes
    if max(ks) >= bank:
        raise fail("evaluate.ssl_k", f"k = {max(ks)} is not below the smallest bank ({min(shots)} shots x "
                                     f"{num_classes} classes = {bank}); every k >= {bank} gives the same value")
    return shots, ks


def describe_shift(p: dict, shift: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(the record of reports/metrics/<shift>/data.json, per-item SSL correctness keyed
    `<rep>/<shot>shot_k<k>` for reports/items/<shift>/ssl.npz).

    Every number here comes from the judges (models/judge), never from the curation embedder:
    SSL kNN, CMMD and the noise estimate in the judge encoder's space, the IS analogue from the
    judge classifier. `judges` in the record says which model computed what."""
    from selectbench.core.images import open_images
    from selectbench.models import judge

    seed = get(p, "evaluate.seed", int)
    stats = read_json(layout.curated(shift) / "stats.json")
    index = read_index(layout.curated(shift) / "index.parquet")
    classes = list(load_classes().entries)
    C = len(classes)
    out = {"shift": shift, "images": stats["images"], "coverage": stats["coverage"], "dataset": stats}
    images = ShiftImages(shift, index)
    save_samples(shift, images, seed)
    enc, enc_cfg = judge.load(layout.judge("encoder"))
    clf, clf_cfg = judge.load(layout.judge("classifier"))
    shift_emb = judge.features(enc, images, enc_cfg)
    labels = index["label"].to_numpy()
    emb_test = judge.features(enc, open_images("test"), enc_cfg)
    test = load_split(layout.TEST_SPLIT)
    train = load_split(layout.TRAIN_SPLIT)
    shots, ks = ssl_settings(p, C)
    out["ssl_knn"], items = {}, {}
    for rep in replicates(p):
        acc, correct = E.ssl_guidance(shift_emb, labels, emb_test, test["labels"], C, shots, ks,
                                      replicate_seed(seed, rep))
        out["ssl_knn"][rep] = acc
        items.update({f"{rep}/{k}": v for k, v in correct.items()})
    n_q = get(p, "evaluate.quality_items", int, lo=2)
    base = np.flatnonzero(train["part"] == 0)
    # Two disjoint base samples: the CMMD reference and its same-distribution floor.
    ref_rows = np.random.default_rng([seed, 1]).choice(base, size=min(2 * n_q, len(base)), replace=False)
    order = np.argsort(ref_rows)  # images are read in row order; the halves keep the random draw's order
    got = judge.features(enc, np.asarray(open_images("train")[ref_rows[order]]), enc_cfg)
    ref_emb = np.empty_like(got)
    ref_emb[order] = got
    take = np.sort(np.random.default_rng(seed).choice(len(index), size=min(n_q, len(index)), replace=False))
    probs = judge.probabilities(clf, images[take], clf_cfg) if len(take) else np.zeros((0, 1))
    out["quality"] = E.quality(shift_emb[take], ref_emb, probs, seed)
    out["judges"] = {"encoder": {k: enc_cfg[k] for k in ("kind", "model")},
                     "classifier": {k: clf_cfg[k] for k in ("kind", "model")},
                     "uses": {"ssl_knn": "encoder", "cmmd": "encoder", "label_noise.estimated": "encoder",
                              "inception_score": "classifier", "label_noise.exact": "simulation truth"}}
    noise_n = min(len(labels), get(p, "evaluate.noise_items", int, lo=0))
    if noise_n >= 20 and len(np.unique(labels)) > 1:
        rows = np.sort(np.random.default_rng(seed).choice(len(labels), size=noise_n, replace=False))
        rate, per_class = noise.estimate_label_noise(shift_emb[rows], labels[rows], C, folds=5, seed=seed)
        out["label_noise"] = {"estimated": float(rate), "per_class_estimated": [float(v) for v in per_class]}
    else:
        out["label_noise"] = {"estimated": float("nan")}
    if "label_precision" in stats:
        out["label_noise"]["exact"] = 1.0 - stats["label_precision"]
        out["label_noise"]["per_class_exact"] = [None if v is None else 1.0 - v for v in stats["label_precision_per_class"]]
    return out, items
