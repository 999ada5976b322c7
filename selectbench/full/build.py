"""The full profile's download and pool stages: ImageNet, LAION and OpenImages through the adapters.

They write the same contracts as the embedded builders (labels in data/raw/<split>.npz, the pool
table data/pool/meta.parquet, crowd labels, the natural-shift table) except that pixels stay where
they are: each image set gets a pointer file (selectbench.images) instead of an array. Every later
stage runs unchanged on either profile."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from selectbench.core import openimages
from selectbench.core.errors import UserError, fail
from selectbench.core.io import write_json
from selectbench.core.params import get
from selectbench.full import decode, imagefolder
from selectbench.full.laion import LaionSource
from selectbench.full.pointer import write_pointer


def settings(p: dict) -> dict:
    # >= 32: the ImageNet-C corruptions need it; a multiple of 8: Stable Diffusion's latents do.
    size = get(p, "full.image_size", int, lo=32)
    if size % 8:
        raise fail("full.image_size", f"must be a multiple of 8, got {size}")
    return {"size": size, "workers": get(p, "full.decode_workers", int, lo=1)}


def _path(p: dict, key: str, *, required: bool = True) -> str | None:
    v = get(p, key, (str, type(None)))
    if v is None:
        if required:
            raise fail(key, "is null; the full profile needs a local path here (params-full.yaml)")
        return None
    if not Path(v).exists():
        raise fail(key, f"not found: {v}")
    return v


def wnids(classes: list[dict]) -> list[str]:
    missing = [i for i, c in enumerate(classes) if not c.get("wnid")]
    if missing:
        raise fail("data/meta/classes.yaml", f"the full profile needs a `wnid` for every class; class {missing[0]} "
                   f"({classes[missing[0]].get('name')!r}) has none")
    return [c["wnid"] for c in classes]


def _write_paths(path: Path, paths) -> None:
    pd.DataFrame({"path": list(paths)}).to_parquet(path, index=False, compression="zstd")


def _decodable(src, s: dict, what: str, rows=None) -> tuple[np.ndarray, dict]:
    """Rows of src that decode, and the others counted by reason: checked where a source enters,
    so no later stage embeds, queries or trains on a file that would come out blank."""
    ok, why = decode.decodable(src, rows, size=s["size"], workers=s["workers"])
    if not ok.any():
        raise UserError(f"{what}: none of its {len(ok)} images decodes ({_reasons(why)})")
    return ok, dict(sorted(why.items()))


def _reasons(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def build_raw(p: dict, classes: list[dict], out: Path) -> dict:
    """data/raw for ImageNet: labels (+ part, all reserved for base shifts: the pool is LAION)."""
    s = settings(p)
    ids = wnids(classes)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"source": "imagenet", "undecodable": {}}
    for split, key in (("train", "full.imagenet.train"), ("test", "full.imagenet.val")):
        root = _path(p, key)
        src = imagefolder.ImageFolderSource(root, ids, name=f"imagenet_{split}")
        ok, why = _decodable(src, s, key)
        m = src.meta()[ok]
        summary["undecodable"][split] = why
        labels = m["label"].to_numpy(np.int64)
        arrays = {"labels": labels} if split == "test" else {"labels": labels, "part": np.zeros(len(labels), np.int8)}
        np.savez(out / f"{split}.npz", **arrays)
        _write_paths(out / f"{split}.paths.parquet", m["path"])
        write_pointer(out / f"{split}.images.json", {"imagenet": {"kind": "files", "root": str(Path(root).resolve()),
                                                                  "paths": f"{split}.paths.parquet"}},
                      s["size"], "RGB", s["workers"])
        summary[split] = int(len(labels))
    summary["base_reserve"] = summary["train"]
    summary["pool_available"] = 0
    write_json(out / "summary.json", summary)
    return summary


# ImageNet-R and -A hold 200 of the 1,000 classes; their published protocol scores a 1000-way model
# on those 200 logits only (Hendrycks et al.), here intersected with the run's classes.
SUBSET_SETS = ("imagenet_r", "imagenet_a")
NATURAL = {"imagenet_v2": imagefolder.imagenet_v2, "imagenet_r": imagefolder.imagenet_r,
           "imagenet_a": imagefolder.imagenet_a, "imagenet_sketch": imagefolder.imagenet_sketch}


def build_natural(p: dict, classes: list[dict], out: Path) -> dict:
    """data/natural: every configured ImageNet variant as one table (set, label) + a pointer."""
    s = settings(p)
    ids = wnids(classes)
    out.mkdir(parents=True, exist_ok=True)
    frames, parts, skipped, scored, bad = [], {}, {}, {}, {}
    pos = {w: i for i, w in enumerate(ids)}
    for name, make in NATURAL.items():
        root = _path(p, f"full.natural.{name}", required=False)
        if root is None:
            continue
        src = make(root, ids)
        if src.skipped:
            skipped[name] = {"classes": len(src.skipped), "images": int(sum(src.skipped.values()))}
        if name in SUBSET_SETS:  # scored over the set's published classes that the run has
            scored[name] = sorted(pos[w] for w in imagefolder.published_wnids(name) if w in pos)
        ok, bad[name] = _decodable(src, s, f"full.natural.{name}")
        m = src.meta()[ok]
        frames.append(pd.DataFrame({"sample_id": m["sample_id"], "label": m["label"].astype(np.int64), "set": name,
                                    "origin": name, "origin_row": np.arange(len(m), dtype=np.int64)}))
        _write_paths(out / f"{name}.paths.parquet", m["path"])
        parts[name] = {"kind": "files", "root": str(src.root.resolve()), "paths": f"{name}.paths.parquet"}
    if not frames:
        raise fail("full.natural", "names no dataset; set at least one of " + ", ".join(NATURAL))
    meta = pd.concat(frames, ignore_index=True)
    meta.to_parquet(out / "meta.parquet", index=False, compression="zstd")
    write_pointer(out / "images.json", parts, s["size"], "RGB", s["workers"], table="meta.parquet")
    write_json(out / "scored_classes.json", scored)
    return {"n": int(len(meta)), "per_set": meta["set"].value_counts().sort_index().to_dict(),
            "outside_the_run_classes": skipped, "undecodable": bad}


def laion_settings(p: dict) -> dict:
    return {"samples_per_shard": get(p, "full.laion.samples_per_shard", int, lo=1),
            "shard_digits": get(p, "full.laion.shard_digits", int, lo=1),
            "min_match": get(p, "full.laion.min_match", float, lo=0, hi=1)}


def laion_rows(laion: LaionSource, s: dict, ls: dict) -> tuple[np.ndarray, dict]:
    """LAION rows whose image is in the tars and decodes, and the others counted by reason.
    Fails when fewer than full.laion.min_match of the rows img2dataset did not report as failed
    have an image: that is a join that does not work, not a web pool's usual losses."""
    ok, reason, facts = laion.image_check()
    counts = pd.Series(reason[~ok]).value_counts().to_dict()
    tried = int(len(ok) - counts.get("download_failed", 0))
    matched = int(len(ok) - sum(n for r, n in counts.items() if r in ("download_failed", "tar_missing", "not_in_tar")))
    if tried and matched < ls["min_match"] * tried:
        if facts["keys_name_present"] == 0 or counts.get("not_in_tar", 0) >= counts.get("tar_missing", 0):
            cause = ("keys do not follow img2dataset's rule (shard id, then the row within the shard, "
                     f"{'from the `key` column' if facts['key_from'] == 'column' else 'derived from row order'}): "
                     "pass img2dataset's `key` column, or set full.laion.samples_per_shard / shard_digits to "
                     "the download's number_sample_per_shard / oom_shard_count")
        else:
            cause = (f"{facts['keys_name_shards'] - facts['keys_name_present']} of the {facts['keys_name_shards']} "
                     f"tars the keys name are missing from {laion.shards_dir}")
        raise fail("full.laion.min_match", f"only {matched} of {tried} LAION rows ({matched / tried:.0%}) have an "
                   f"image in the tars (need {ls['min_match']:.0%}); likely cause: {cause}")
    rows = np.flatnonzero(ok)
    dec, why = _decodable(laion, s, "full.laion", rows)
    ok[rows[~dec]] = False
    counts.update(why)
    return ok, {"key_from": facts["key_from"], "rows": int(len(ok)), "kept": int(ok.sum()),
                "left_out": dict(sorted(counts.items()))}


def build_pool(p: dict, classes: list[dict], out: Path, natural_out: Path) -> dict:
    """data/pool = LAION rows (captions; true class unknown) + the OpenImages images that carry a
    mapped label (no caption), with the OI labels as the pool's crowd labels. Rows without a
    decodable image are left out here, counted by reason in stats.json `skipped`."""
    s, ls = settings(p), laion_settings(p)
    out.mkdir(parents=True, exist_ok=True)
    laion_root = _path(p, "full.laion.root")
    # The shard index (key -> tar offset) is built here, into the stage's output, so that later
    # stages only read it.
    laion = LaionSource(laion_root, _path(p, "full.laion.shards", required=False),
                        index_cache=out / "laion_shards.parquet", samples_per_shard=ls["samples_per_shard"],
                        shard_digits=ls["shard_digits"])
    laion.shard_index()
    lm = laion.meta()
    keep, laion_stats = laion_rows(laion, s, ls)
    rows = np.flatnonzero(keep)
    frames = [pd.DataFrame({"sample_id": lm["sample_id"].to_numpy()[rows],
                            "caption": lm["caption"].fillna("").astype(str).to_numpy()[rows],
                            "origin": "laion", "origin_row": rows.astype(np.int64)})]
    parts = {"laion": {"kind": "laion", "root": str(Path(laion_root).resolve()),
                       "shards": str(laion.shards_dir.resolve()), "index_cache": "laion_shards.parquet",
                       "samples_per_shard": ls["samples_per_shard"], "shard_digits": ls["shard_digits"]}}
    oi_cfg = {k: _path(p, f"full.openimages.{k}") for k in ("labels_csv", "descriptions_csv", "mapping_json", "images_dir")}
    oi = openimages.OpenImagesLabels(oi_cfg["labels_csv"], oi_cfg["descriptions_csv"], oi_cfg["mapping_json"])
    oi.unmapped_classes(len(classes))  # a mapping to a class outside the label space fails here
    labels = oi.curate(verified_only=False)
    image_ids = np.sort(labels["sample_id"].str.slice(len("oi:")).unique())
    ok, oi_bad = _decodable(decode.PathSource(oi_cfg["images_dir"], [f"{i}.jpg" for i in image_ids], name="oi"), s,
                            "full.openimages.images_dir")
    image_ids = image_ids[ok]
    labels = labels[labels["sample_id"].isin([f"oi:{i}" for i in image_ids])]  # no crowd label without its image
    paths = [f"{i}.jpg" for i in image_ids]
    frames.append(pd.DataFrame({"sample_id": [f"oi:{i}" for i in image_ids], "caption": "", "origin": "openimages",
                                "origin_row": np.arange(len(image_ids), dtype=np.int64)}))
    pd.DataFrame({"path": paths}).to_parquet(out / "openimages.paths.parquet", index=False, compression="zstd")
    parts["openimages"] = {"kind": "files", "root": str(Path(oi_cfg["images_dir"]).resolve()),
                           "paths": "openimages.paths.parquet"}
    meta = pd.concat(frames, ignore_index=True)
    meta["true_label"] = np.int64(-2)  # unknown: label precision is reported only where the truth is known
    meta.to_parquet(out / "meta.parquet", index=False, compression="zstd")
    write_pointer(out / "images.json", parts, s["size"], "RGB", s["workers"], table="meta.parquet")
    # The crowd labels in the OpenImages CSV format, restricted to mapped labels; curate@oi reads
    # them with the vocabulary and mapping copied beside them.
    pd.DataFrame({"ImageID": labels["sample_id"], "Source": "crowd",  # ImageID = the pool's sample_id
                  "LabelName": labels["oi_label"], "Confidence": labels["score"].astype(float)}) \
        .to_csv(out / "crowd_labels.csv", index=False)
    shutil.copyfile(oi_cfg["descriptions_csv"], out / "crowd_vocab.csv")
    shutil.copyfile(oi_cfg["mapping_json"], out / "oi_mapping.json")
    natural = build_natural(p, classes, natural_out)
    stats = {"n_total": int(len(meta)), "counts_per_source": meta["origin"].value_counts().sort_index().to_dict(),
             "skipped": {"laion": laion_stats["left_out"], "openimages": oi_bad}, "laion": laion_stats,
             "natural": natural}
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats
