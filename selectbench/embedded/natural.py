"""The natural-shift set: listed clip-art and emoji renditions of the base classes, held out of the
pool and the transfer tasks (byte-identical and near-duplicate renders included)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from selectbench.embedded.clipart import clipart_caption, load_clipart
from selectbench.embedded.emoji import EmojiEntry, _strip_tones, parse_emoji_test, render_emoji
from selectbench.embedded.meta import META_DIR, load_classes, load_natural_map
from selectbench.embedded.render import SIDE, _parallel_map

# A pool render this close (RMS grey levels, 28x28) to a natural item is the same picture in
# another file (re-saved copy, colour variant); it must not leak the held-out set into the pool.
NEAR_DUPLICATE_RMS = 8.0


def near_duplicates(candidates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per candidate: whether it is within NEAR_DUPLICATE_RMS of any reference image."""
    if not len(candidates) or not len(reference):
        return np.zeros(len(candidates), dtype=bool)
    a = candidates.reshape(len(candidates), -1).astype(np.float32)
    b = reference.reshape(len(reference), -1).astype(np.float32)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    rms = np.sqrt(np.maximum(d2.min(axis=1), 0.0) / a.shape[1])
    return rms < NEAR_DUPLICATE_RMS


def build_natural(entries, cfg, emoji_index, workers) -> dict:
    """Render the natural_map items; skin-tone variants of listed emoji come along."""
    skipped: dict[str, int] = {}
    clip_tasks = [(cfg["clipart"]["root"], e.key) for e in entries if e.source == "clipart"]
    clip_label = {e.key: e.label for e in entries if e.source == "clipart"}
    emoji_items: list[tuple[EmojiEntry, int]] = []
    if emoji_index is not None:
        by_base: dict[str, list[EmojiEntry]] = {}
        for em in emoji_index:
            base, toned = _strip_tones(em.cps)
            if toned:
                by_base.setdefault(base, []).append(em)
        exact = {em.cps: em for em in emoji_index}
        for e in entries:
            if e.source != "emoji":
                continue
            em = exact.get(e.key)
            if em is None:
                skipped["emoji_not_in_emoji_test"] = skipped.get("emoji_not_in_emoji_test", 0) + 1
                continue
            emoji_items.append((em, e.label))
            for v in by_base.get(_strip_tones(e.key)[0], []):
                emoji_items.append((v, e.label))
    else:
        n_emoji = sum(e.source == "emoji" for e in entries)
        if n_emoji:
            skipped["emoji_font_or_test_file_missing"] = n_emoji

    images, rows, hashes = [], [], set()
    for rel, arr, status, digest in _parallel_map(load_clipart, clip_tasks, workers, "natural clip-art"):
        if status != "ok":
            skipped[f"clipart_{status}"] = skipped.get(f"clipart_{status}", 0) + 1
            continue
        hashes.add(digest)
        images.append(arr)
        rows.append(("clipart", rel, clipart_caption(rel), clip_label[rel]))
    font = cfg["emoji"]["font"]
    tasks = [(font, em.cps) for em, _ in emoji_items]
    results = _parallel_map(render_emoji, tasks, workers, "natural emoji") if Path(font).is_file() else []
    for (em, label), (cps, arr, status) in zip(emoji_items, results):
        if status != "ok":
            skipped[f"emoji_{status}"] = skipped.get(f"emoji_{status}", 0) + 1
            continue
        images.append(arr)
        rows.append(("emoji", cps, em.name, label))
    imgs = np.stack(images) if images else np.zeros((0, SIDE, SIDE), np.uint8)
    meta = pd.DataFrame(
        {
            "sample_id": [f"natural:{i:05d}" for i in range(len(rows))],
            "source": [r[0] for r in rows],
            "origin": [r[1] for r in rows],
            "caption": [r[2] for r in rows],
            "label": np.array([r[3] for r in rows], dtype=np.int64),
        }
    )
    return {
        "images": imgs,
        "meta": meta,
        "skipped": dict(sorted(skipped.items())),
        "clip_keys": {e.key for e in entries if e.source == "clipart"},
        "clip_hashes": hashes,
        "emoji_keys": {em.cps for em, _ in emoji_items} | {e.key for e in entries if e.source == "emoji"},
    }


def natural_holdout(clipart_root: str, font: str, test_file: str, *, meta_dir=None, workers: int = 1) -> dict:
    """The held-out natural-shift set as build_pool renders it (listed keys, skin-tone variants,
    file hashes, images), for other stages that must keep it out of their data (stages/tasks.py)."""
    meta_dir = Path(meta_dir) if meta_dir is not None else META_DIR
    entries = load_natural_map(meta_dir, load_classes(meta_dir))
    emoji_index = parse_emoji_test(test_file) if Path(test_file).is_file() and Path(font).is_file() else None
    cfg = {"clipart": {"root": clipart_root}, "emoji": {"font": font}}
    return build_natural(entries, cfg, emoji_index, workers)
