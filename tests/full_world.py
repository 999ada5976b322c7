"""A tiny full-profile world: ImageNet, LAION, OpenImages, ImageNet-V2/-R/-Sketch and VTAB folders in
their real layouts, a tiny open_clip model and a tiny Stable Diffusion, all written offline.

Images are class-coloured RGB pictures, so even a few training steps can tell classes apart.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw

from selectbench.full.decode import to_array
from tests.fixtures import WNIDS, write_tiny_sd

CLASSES = [
    {"wnid": WNIDS[0], "name": "tench", "synonyms": ["tench", "tinca"], "definition": "tench, which is a freshwater fish"},
    {"wnid": WNIDS[1], "name": "goldfish", "synonyms": ["goldfish"], "definition": "goldfish, which is a small golden carp"},
    {"wnid": WNIDS[2], "name": "shark", "synonyms": ["shark", "white shark"], "definition": "shark, which is a large predatory fish"},
    {"wnid": WNIDS[3], "name": "tiger shark", "synonyms": ["tiger shark"], "definition": "tiger shark, which is a striped shark"},
]  # fmt: skip
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
# One-line CLIP config in open_clip's model_configs format: a timm test_resnet tower keeps it tiny.
CLIP_CONFIG = {"embed_dim": 16,
               "vision_cfg": {"timm_model_name": "test_resnet", "timm_pool": "avg", "timm_proj": "linear", "image_size": 32},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1}}


@dataclass
class World:
    root: Path
    overrides: dict  # params.yaml values for the full profile over this world
    classes: list[dict]
    laion_rows: int   # LAION rows kept in the pool (with an image that decodes)
    oi_images: int
    expect: dict      # known answers: counts per reason a correct run must report


def picture(c: int, i: int, w: int = 48, h: int = 40, grey: bool = False) -> Image.Image:
    rng = np.random.default_rng(1000 * c + i)
    base = np.array(COLOURS[c], dtype=np.float32)
    a = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(a)
    d = ImageDraw.Draw(img)
    x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    d.ellipse((x, y, x + w // 3, y + h // 3), fill=tuple(255 - v for v in COLOURS[c]))
    return img.convert("L") if grey else img


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _save(path: Path, img: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_jpeg(img))


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_clip(root: Path) -> tuple[Path, Path]:
    """(config json, safetensors weights) of a tiny random CLIP."""
    import torch
    from safetensors.torch import save_file

    from selectbench.models.embedder import build

    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "tiny-clip.json"
    cfg.write_text(json.dumps(CLIP_CONFIG))
    torch.manual_seed(0)
    model = build(CLIP_CONFIG)
    weights = root / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return cfg, weights


LAION_SPS = 10  # img2dataset --number_sample_per_shard of the fixture download (keys: 5 + 1 digits)


def write_judges(root: Path) -> dict:
    """Published-weights stand-ins for the judges: random timm models saved as safetensors files, as
    timm's hub releases are (judge.pretrained.<role>: model name, weights file, input size)."""
    import timm
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, head in (("encoder", {"num_classes": 0}), ("classifier", {})):  # the classifier keeps timm's 1,000-class head
        model = timm.create_model("test_resnet", pretrained=False, in_chans=3, **head)
        weights = root / f"{role}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        out[role] = {"model": "test_resnet", "weights": str(weights), "img_size": 32}
    return out


def write_laion(root: Path, embedder, parts: int = 2, rows: int = 30) -> dict:
    """LAION-400M as released (metadata with LAION's own columns, SAMPLE_ID and no `key`; the
    embeddings are the tiny CLIP's own, as LAION's are ViT-B/32's) and an img2dataset webdataset
    download of it with number_sample_per_shard=LAION_SPS: one tar, parquet and _stats.json per
    shard. Row 7 of every shard failed to download; shard 4's tar was never fetched; one member
    is truncated and one is empty. Returns the counts a correct pool must find."""
    for d in ("metadata", "img_emb", "text_emb", "shards"):
        (root / d).mkdir(parents=True, exist_ok=True)
    fillers = ["a sunset over the sea", "my holiday photos", "product image 1024px"]
    shard = 0
    for p in range(parts):
        caps, imgs = [], []
        for i in range(rows):
            c = (p * rows + i) % 4
            caps.append(f"a photo of a {CLASSES[c]['name']}" if i % 3 else fillers[i % len(fillers)])
            imgs.append(picture(c, 500 + p * rows + i))
        ids = 1_000_000 + 7919 * (p * rows + np.arange(rows))  # LAION's SAMPLE_ID: never a tar key
        pd.DataFrame({"SAMPLE_ID": ids, "URL": [f"https://example.org/{i}.jpg" for i in ids], "TEXT": caps,
                      "HEIGHT": 40, "WIDTH": 48, "LICENSE": "?", "NSFW": "UNLIKELY", "similarity": 0.33}) \
            .to_parquet(root / "metadata" / f"metadata_{p}.parquet", index=False)
        arr = np.stack([to_array(im, 32, "RGB") for im in imgs])
        np.save(root / "img_emb" / f"img_emb_{p}.npy", embedder.encode_images(arr).astype(np.float16))
        np.save(root / "text_emb" / f"text_emb_{p}.npy", embedder.encode_texts(caps).astype(np.float16))
        for lo in range(0, rows, LAION_SPS):  # img2dataset starts a new shard at each input file
            if shard != 4:
                _write_shard(root / "shards", shard, caps[lo:lo + LAION_SPS], imgs[lo:lo + LAION_SPS], ids[lo:lo + LAION_SPS])
            shard += 1
    n_shards, written = shard, shard - 1
    return {"rows": parts * rows, "download_failed": written, "tar_missing": LAION_SPS, "truncated": 1,
            "zero_byte": 1, "kept": parts * rows - written - LAION_SPS - 2, "shards": n_shards}


def _write_shard(folder: Path, shard: int, caps, imgs, ids) -> None:
    rows = []
    with tarfile.open(folder / f"{shard:05d}.tar", "w") as tf:
        for i, (cap, im, sid) in enumerate(zip(caps, imgs, ids)):
            key = f"{shard:05d}{i:01d}"  # img2dataset's compute_key with 10 samples per shard
            status = "failed_to_download" if i == 7 else "success"
            rows.append({"url": f"https://example.org/{sid}.jpg", "caption": cap, "key": key, "status": status,
                         "error_message": "HTTP Error 404" if i == 7 else None})
            if status != "success":
                continue
            data = _jpeg(im)
            if (shard, i) == (0, 3):
                data = data[: len(data) // 2]  # truncated member
            elif (shard, i) == (1, 2):
                data = b""  # empty member
            _tar_add(tf, f"{key}.jpg", data)
            _tar_add(tf, f"{key}.txt", cap.encode())
            _tar_add(tf, f"{key}.json", json.dumps(rows[-1]).encode())
    pd.DataFrame(rows).to_parquet(folder / f"{shard:05d}.parquet", index=False)
    ok = sum(r["status"] == "success" for r in rows)
    (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"count": len(rows), "successes": ok,
                                                                "failed_to_download": len(rows) - ok}))


def write_openimages(root: Path) -> int:
    """Labels CSV + descriptions + mapping (class 3 unmapped) + <ImageID>.jpg images."""
    labels = {"/m/aa": 0, "/m/bb": 1, "/m/cc": 2}
    rows = []
    n = 0
    for c, lab in enumerate(labels):
        for i in range(5):
            iid = f"{c:04x}{i:012x}"
            _save(root / "images" / f"{iid}.jpg", picture(c, 900 + i))
            rows.append((iid, "verification", lab, 1 if i < 4 else 0))
            n += 1
    pd.DataFrame(rows, columns=["ImageID", "Source", "LabelName", "Confidence"]).to_csv(root / "labels.csv", index=False)
    pd.DataFrame([(k, k.strip("/m")) for k in [*labels, "/m/zz"]], columns=["LabelName", "DisplayName"]) \
        .to_csv(root / "descriptions.csv", index=False)
    (root / "mapping.json").write_text(json.dumps(labels))
    broken = root / "images" / f"{1:04x}{0:012x}.jpg"  # a mapped positive whose download broke off
    broken.write_bytes(broken.read_bytes()[:-400])
    return n - 3 - 1  # the Confidence-0 rows are verified negatives: their images carry no mapped label


def write_world(tmp: Path) -> World:
    from selectbench.models import embedder as E

    root = Path(tmp)
    for split, n, off in (("train", 16, 0), ("val", 6, 100)):
        for c, cls in enumerate(CLASSES):
            for i in range(n):
                _save(root / "imagenet" / split / cls["wnid"] / f"{cls['wnid']}_{i}.JPEG", picture(c, off + i))
    odd = write_odd_files(root / "imagenet" / "train")
    v2 = root / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    for c in range(4):  # ImageNet-V2: numeric class folders; -Sketch: grey drawings
        for i in range(3):
            _save(v2 / str(c) / f"{i}.jpeg", picture(c, 200 + i))
            _save(root / "sketch" / "sketch" / CLASSES[c]["wnid"] / f"{i}.JPEG", picture(c, 300 + i, grey=True))
    (v2 / "0" / "empty.jpeg").write_bytes(b"")  # left out of the natural set, counted
    for c in (1, 2):  # ImageNet-R: a subset of the classes (200 of 1,000 in the real set)
        for i in range(2):
            _save(root / "imagenet-r" / "imagenet-r" / CLASSES[c]["wnid"] / f"art_{i}.jpg", picture(c, 350 + i))
    for c, name in enumerate(("AnnualCrop", "Forest")):  # VTAB EuroSAT layout: 2750/<Class>/*.jpg
        for i in range(12):
            _save(root / "vtab" / "eurosat" / "2750" / name / f"{name}_{i + 1}.jpg", picture(c + 2, 400 + i))
    (root / "vtab" / "eurosat" / "2750" / "Forest" / "Forest_13.jpg").write_bytes(b"")
    cfg, weights = write_clip(root / "clip")
    laion = write_laion(root / "laion", E.load_pretrained(str(cfg), str(weights)))
    oi = write_openimages(root / "openimages")
    sd, sdvar = write_tiny_sd(root / "sd")
    judges = write_judges(root / "judges")
    overrides = {
        "profile": "full",
        "full": {"image_size": 32, "decode_workers": 2,
                 "imagenet": {"train": str(root / "imagenet/train"), "val": str(root / "imagenet/val")},
                 "natural": {"imagenet_v2": str(root / "imagenetv2"), "imagenet_r": str(root / "imagenet-r"), "imagenet_a": None,
                             "imagenet_sketch": str(root / "sketch")},
                 "laion": {"root": str(root / "laion"), "shards": None, "samples_per_shard": LAION_SPS,
                           "shard_digits": 5, "min_match": 0.5},
                 "openimages": {"labels_csv": str(root / "openimages/labels.csv"),
                                "descriptions_csv": str(root / "openimages/descriptions.csv"),
                                "mapping_json": str(root / "openimages/mapping.json"),
                                "images_dir": str(root / "openimages/images")}},
        "embedder": {"kind": "pretrained", "pretrained": {"model": str(cfg), "weights": str(weights)}},
        "generator": {"kind": "pretrained", "pretrained": {"model": str(sd), "variation": str(sdvar)}},
        "judge": {"kind": "pretrained", "pretrained": judges},
        "transfer": {"tasks": ["vtab_eurosat"], "vtab_root": str(root / "vtab"), "image_size": 32, "mode": "RGB",
                     "vtab_test_max": None},
    }
    expect = {"laion": laion, "imagenet_train": odd, "natural": {"imagenet_v2": {"zero_byte": 1}},
              "openimages": {"truncated": 1}, "vtab_eurosat": {"zero_byte": 1}}
    return World(root, overrides, CLASSES, laion["kept"], oi, expect)


def write_odd_files(train: Path) -> dict:
    """Files real ImageNet train holds: CMYK JPEGs and a PNG named .JPEG (both must decode, to
    the right colours), plus the broken files a copy can have (truncated, empty, not an image).
    Returns the per-class image counts and undecodable counts a correct run finds."""
    w0, w1 = CLASSES[0]["wnid"], CLASSES[1]["wnid"]
    solid = Image.new("RGB", (48, 40), COLOURS[0])
    buf = io.BytesIO()
    solid.convert("CMYK").save(buf, "JPEG", quality=95)
    (train / w0 / f"{w0}_cmyk.JPEG").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    solid.save(buf, "PNG")
    (train / w0 / f"{w0}_png.JPEG").write_bytes(buf.getvalue())
    (train / w1 / f"{w1}_jpeg.png").write_bytes(_jpeg(Image.new("RGB", (48, 40), COLOURS[1])))
    (train / w0 / f"{w0}_truncated.JPEG").write_bytes(_jpeg(picture(0, 90))[:-400])
    (train / w1 / f"{w1}_empty.JPEG").write_bytes(b"")
    (train / w1 / f"{w1}_html.JPEG").write_bytes(b"<html>404 Not Found</html>\n")
    return {"per_class": [18, 17, 16, 16], "undecodable": {"truncated": 1, "unreadable": 1, "zero_byte": 1},
            "solid": {f"{w0}/{w0}_cmyk.JPEG": COLOURS[0], f"{w0}/{w0}_png.JPEG": COLOURS[0],
                      f"{w1}/{w1}_jpeg.png": COLOURS[1]}}


def write_classes(path: Path) -> None:
    path.write_text(yaml.safe_dump({"classes": CLASSES}, sort_keys=False))


def main(argv=None) -> None:
    """python -m tests.full_world DIR: the fixture world in DIR for a first try of the full profile
    (params-full-smoke.yaml reads it from data/tmp/world), with its 4 classes written to
    data/meta/classes.yaml (the full profile needs their wnids)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.full_world")
    ap.add_argument("dir")
    ap.add_argument("--classes", default="data/meta/classes.yaml")
    args = ap.parse_args(argv)
    w = write_world(Path(args.dir))
    write_classes(Path(args.classes))
    print(f"full_world: {w.root} ({w.laion_rows} LAION rows with an image, {w.oi_images} OpenImages); "
          f"classes -> {args.classes}")


if __name__ == "__main__":
    main()
