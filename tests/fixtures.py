"""Tiny fixtures in the real release formats, written into a temp dir (no downloads).

Each writer returns a small record of what it wrote, so tests assert against known answers
instead of re-deriving them. Other test modules may reuse these.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import struct
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

# The first twelve ImageNet-1k WordNet ids, in class-index order (0 tench .. 11 goldfinch).
WNIDS = [
    "n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331",
    "n01498041", "n01514668", "n01514859", "n01518878", "n01530575", "n01531178",
]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Single images in awkward modes


def image_bytes(kind: str) -> bytes:
    """Encoded bytes of one test image; kinds cover the modes a robust converter must handle."""
    buf = io.BytesIO()
    if kind == "rgb_jpeg":
        _gradient("RGB", (40, 30)).save(buf, "JPEG", quality=90)
    elif kind == "gray_jpeg":
        _gradient("L", (30, 30)).save(buf, "JPEG")
    elif kind == "cmyk_jpeg":  # pure cyan; Pillow writes the Adobe marker, so it reads back inverted-correct
        Image.new("CMYK", (32, 32), (255, 0, 0, 0)).save(buf, "JPEG", quality=95)
    elif kind == "palette_png":  # left half transparent (index 0), right half opaque red
        im = Image.new("P", (32, 32), 0)
        im.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
        im.paste(1, (16, 0, 32, 32))
        im.save(buf, "PNG", transparency=0)
    elif kind == "gray16_png":  # 16-bit grey at half scale (32896/65535 -> 128)
        Image.new("I;16", (32, 32), 32896).save(buf, "PNG")
    elif kind == "la_png":  # fully transparent black: must come out white
        Image.new("LA", (32, 32), (0, 0)).save(buf, "PNG")
    elif kind == "rgba_png":  # opaque blue
        Image.new("RGBA", (32, 48), (0, 0, 255, 255)).save(buf, "PNG")
    elif kind == "bmp":
        _gradient("RGB", (20, 20)).save(buf, "BMP")
    elif kind == "huge_jpeg":  # 36 Mpx solid green: exercises JPEG draft decoding
        Image.new("RGB", (6000, 6000), (0, 200, 0)).save(buf, "JPEG", quality=90)
    elif kind == "tall_png":
        Image.new("RGB", (300, 5000), (200, 100, 0)).save(buf, "PNG")
    elif kind == "truncated_jpeg":
        _gradient("RGB", (64, 64)).save(buf, "JPEG")
        return buf.getvalue()[: len(buf.getvalue()) // 2]
    elif kind == "zero_byte":
        return b""
    elif kind == "not_image":
        return b"<html>404 Not Found</html>\n"
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    return buf.getvalue()


def _gradient(mode: str, size: tuple[int, int]) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None]
    g = ((x + y) / 2).astype(np.uint8)
    if mode == "L":
        return Image.fromarray(g)
    return Image.fromarray(np.stack([g, 255 - g, np.full_like(g, 90)], axis=2))


def write_class_tree(root: Path, tree: dict[str, dict[str, str]], extra_files: dict[str, bytes] | None = None) -> Path:
    """root/<folder>/<file> from {folder: {file: image kind}}; extra_files are raw files by relpath."""
    root = Path(root)
    for folder, files in tree.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for fn, kind in files.items():
            (root / folder / fn).write_bytes(image_bytes(kind))
    for rel, data in (extra_files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@dataclass
class FolderFixture:
    root: Path
    wnids: list[str]
    n_items: int
    label_counts: dict[int, int]
    errors: Counter
    kinds: dict[str, str] = field(default_factory=dict)  # relpath -> image kind


_MIXED_TREE = {
    WNIDS[2]: {
        "rgb.JPEG": "rgb_jpeg",
        "cmyk.jpg": "cmyk_jpeg",
        "palette.png": "palette_png",
        "gray16.png": "gray16_png",
        "la.png": "la_png",
        "rgba.png": "rgba_png",
        "huge.jpg": "huge_jpeg",
    },
    WNIDS[5]: {
        "ok.jpeg": "gray_jpeg",
        "truncated.JPEG": "truncated_jpeg",
        "empty.JPEG": "zero_byte",
        "garbage.jpg": "not_image",
    },
    WNIDS[7]: {"tall.png": "tall_png", "small.bmp": "bmp"},
}


def write_imagefolder(tmp: Path) -> FolderFixture:
    """An ImageNet-style wnid tree holding every awkward mode plus three broken files and two
    non-image files (README.txt at the top, notes.txt in a class folder) that must be ignored."""
    root = write_class_tree(
        Path(tmp) / "train",
        _MIXED_TREE,
        {"README.txt": b"not an image\n", f"{WNIDS[5]}/notes.txt": b"also not an image\n"},
    )
    kinds = {f"{d}/{f}": k for d, files in _MIXED_TREE.items() for f, k in files.items()}
    return FolderFixture(
        root=root,
        wnids=list(WNIDS),
        n_items=len(kinds),
        label_counts={2: 7, 5: 4, 7: 2},
        errors=Counter({"truncated": 1, "zero_byte": 1, "unreadable": 1}),
        kinds=kinds,
    )


def write_imagenet_variant(tmp: Path, variant: str) -> FolderFixture:
    """The published top-level layouts of ImageNet-V2 / -R / -A / -Sketch, a few images each,
    written the way each archive extracts (the returned root is the extraction folder)."""
    tmp = Path(tmp) / variant
    if variant == "imagenet_v2":  # numeric class folders; '10' checks numeric, not string, ordering
        top = "imagenetv2-matched-frequency-format-val"
        tree = {"0": {"7e2d4f.jpeg": "rgb_jpeg"}, "2": {"a1.jpeg": "rgb_jpeg", "b2.jpeg": "gray_jpeg"}, "10": {"c3.jpeg": "rgb_jpeg"}}
        counts = {0: 1, 2: 2, 10: 1}
        extra = {}
    elif variant in ("imagenet_r", "imagenet_a"):
        top = variant.replace("_", "-")
        tree = {WNIDS[1]: {"art_0.jpg": "rgb_jpeg", "cartoon_1.jpg": "rgb_jpeg"}, WNIDS[9]: {"sketch_3.jpg": "gray_jpeg"}}
        counts = {1: 2, 9: 1}
        if variant == "imagenet_a":  # file names contain spaces; classes: two of A's 200 published
            tree = {WNIDS[6]: {"0.000116_digital clock _ digital clock_0.865662.jpg": "rgb_jpeg",
                               "0.0235_stingray _ stingray_0.5.jpg": "rgb_jpeg"},
                    WNIDS[11]: {"0.1_ostrich _ emu_0.7.jpg": "gray_jpeg"}}  # fmt: skip
            counts = {6: 2, 11: 1}
        extra = {f"{top}/README.txt": b"200 classes\n"}
    elif variant == "imagenet_sketch":
        top = "sketch"
        tree = {WNIDS[0]: {f"{WNIDS[0]}_10026-1.JPEG": "gray_jpeg"}, WNIDS[11]: {f"{WNIDS[11]}_1.JPEG": "gray_jpeg", f"{WNIDS[11]}_2.JPEG": "bmp"}}
        counts = {0: 1, 11: 2}
        extra = {}
    else:
        raise ValueError(f"unknown variant {variant!r}")
    write_class_tree(tmp / top, tree)
    write_class_tree(tmp, {}, extra)
    return FolderFixture(root=tmp, wnids=list(WNIDS), n_items=sum(counts.values()), label_counts=counts, errors=Counter())


# ----------------------------------------------------------------------------------------------
# LAION-400M release layout + img2dataset shards


@dataclass
class LaionFixture:
    root: Path
    keys: list[str]
    captions: list[str]
    dim: int
    part_files: dict[str, list[Path]]  # 'metadata' / 'img_emb' / 'text_emb' -> one path per part
    shards: list[Path]
    truncated_key: str
    zero_byte_key: str
    missing_key: str  # in the metadata but not in any shard (a failed download)
    errors: Counter


def laion_embedding(kind: str, row: int, dim: int) -> np.ndarray:
    """Deterministic per-row vector: column 0 is +row for images and -row for text (exact in
    float16), so tests can check that concatenation keeps row order."""
    rng = np.random.default_rng(1000 * (kind == "text") + row)
    v = rng.standard_normal(dim).astype(np.float32) * 0.1
    v[0] = row if kind == "img" else -row
    return v.astype(np.float16)


def write_laion(tmp: Path, parts: int = 2, rows: int = 5, dim: int = 8, pad: int = 4) -> LaionFixture:
    """metadata/metadata_NNNN.parquet + img_emb/img_emb_NNNN.npy + text_emb/text_emb_NNNN.npy per
    part (clip-retrieval layout) and shards/NNNNN.tar per part (img2dataset: KEY.jpg, KEY.txt,
    KEY.json, plus the NNNNN.parquet and NNNNN_stats.json it writes beside each tar)."""
    root = Path(tmp) / "laion"
    for d in ("metadata", "img_emb", "text_emb", "shards"):
        (root / d).mkdir(parents=True, exist_ok=True)
    keys, captions = [], []
    files: dict[str, list[Path]] = {"metadata": [], "img_emb": [], "text_emb": []}
    shards = []
    truncated_key = f"{0:05d}{3:04d}"
    zero_key = f"{min(1, parts - 1):05d}{2:04d}"
    missing_key = f"{parts - 1:05d}{rows - 1:04d}"
    for p in range(parts):
        part_keys = [f"{p:05d}{i:04d}" for i in range(rows)]  # img2dataset key: shard id + index
        part_caps = [f"photo {p}-{i} of a tench" if i % 2 == 0 else f"a goldfish, part {p} #{i}" for i in range(rows)]
        g = p * rows + np.arange(rows)
        meta = pd.DataFrame(
            {
                "image_path": part_keys,
                "caption": part_caps,
                "NSFW": ["UNLIKELY"] * rows,
                "similarity": np.linspace(0.3, 0.4, rows),
                "LICENSE": ["?"] * rows,
                "url": [f"https://example.org/{k}.jpg" for k in part_keys],
                "key": part_keys,
                "status": ["success"] * rows,
                "width": np.full(rows, 64, dtype=np.int64),
                "height": np.full(rows, 64, dtype=np.int64),
            }
        )
        tag = f"{p:0{pad}d}"
        files["metadata"].append(root / "metadata" / f"metadata_{tag}.parquet")
        meta.to_parquet(files["metadata"][-1], index=False)
        for kind, d in (("img", "img_emb"), ("text", "text_emb")):
            files[d].append(root / d / f"{d}_{tag}.npy")
            np.save(files[d][-1], np.stack([laion_embedding(kind, int(r), dim) for r in g]))
        shard = root / "shards" / f"{p:05d}.tar"
        with tarfile.open(shard, "w") as tf:
            for k, c in zip(part_keys, part_caps):
                if k == missing_key:
                    continue
                kind = "truncated_jpeg" if k == truncated_key else "zero_byte" if k == zero_key else "rgb_jpeg"
                _tar_add(tf, f"{k}.jpg", image_bytes(kind))
                _tar_add(tf, f"{k}.txt", c.encode())
                _tar_add(tf, f"{k}.json", json.dumps({"url": f"https://example.org/{k}.jpg", "key": k, "caption": c}).encode())
        meta[["url", "caption", "key", "status"]].to_parquet(root / "shards" / f"{p:05d}.parquet", index=False)
        (root / "shards" / f"{p:05d}_stats.json").write_text(json.dumps({"count": rows, "successes": rows}))
        shards.append(shard)
        keys += part_keys
        captions += part_caps
    return LaionFixture(
        root=root,
        keys=keys,
        captions=captions,
        dim=dim,
        part_files=files,
        shards=shards,
        truncated_key=truncated_key,
        zero_byte_key=zero_key,
        missing_key=missing_key,
        errors=Counter({"truncated": 1, "zero_byte": 1, "missing": 1}),
    )


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


# ----------------------------------------------------------------------------------------------
# OpenImages v7 CSV trio


@dataclass
class OpenImagesFixture:
    labels_csv: Path
    descriptions_csv: Path
    mapping_json: Path
    num_classes: int
    verified: list[tuple[str, int, str, float]]  # (sample_id, label, oi_label, score), sorted
    any_positive: list[tuple[str, int, str, float]]
    unmapped: list[int]


# Label ids in the /m/... form; the mapping sends two OI labels (Dog, Puppy) to one class.
_OI_CLASSES = [("/m/09d_r", "Mountain"), ("/m/0bt9lr", "Dog"), ("/m/0bjyj5", "Puppy"), ("/m/01yrx", "Cat"), ("/m/0k4j", "Car")]
_OI_MAPPING = {"/m/09d_r": 3, "/m/0bt9lr": 5, "/m/0bjyj5": 5, "/m/01yrx": 7}  # Car stays unmapped


def write_openimages(tmp: Path) -> OpenImagesFixture:
    """oidv7-train-annotations-human-imagelabels.csv, oidv7-class-descriptions.csv (with header,
    as in v7) and a {LabelName: class_index} mapping over 10 classes."""
    root = Path(tmp) / "openimages"
    root.mkdir(parents=True, exist_ok=True)
    a, b, c, d, e, f = "000002b66c9c498e", "000002b97e5471a0", "000002c707c9895e", "0000048549557964", "000004f4400f6ec5", "00000a0b5c1c2ad6"
    rows = [
        (a, "verification", "/m/09d_r", 1),  # a: Mountain -> 3
        (a, "verification", "/m/0bt9lr", 1),  # a: Dog -> 5
        (a, "crowdsource-verified", "/m/0bjyj5", 1),  # a: Puppy -> 5 again: one row for (a, 5)
        (b, "verification", "/m/0bt9lr", 0),  # verified negative: never kept
        (b, "verification", "/m/01yrx", 1),  # b: Cat -> 7
        (b, "verification", "/m/01yrx", 1),  # identical duplicate line
        (c, "verification", "/m/0k4j", 1),  # Car: unmapped
        (d, "verification", "/m/09d_r", 0),  # negative
        (e, "machine", "/m/01yrx", 0.7),  # not human-verified: only without verified_only
        (f, "verification", "/m/09d_r", 1),  # f: Mountain -> 3
        (e, "machine", "/m/0bjyj5", 0.4),
    ]
    labels = root / "oidv7-train-annotations-human-imagelabels.csv"
    pd.DataFrame(rows, columns=["ImageID", "Source", "LabelName", "Confidence"]).to_csv(labels, index=False)
    desc = root / "oidv7-class-descriptions.csv"
    pd.DataFrame(_OI_CLASSES, columns=["LabelName", "DisplayName"]).to_csv(desc, index=False)
    mapping = root / "oi_to_in.json"
    mapping.write_text(json.dumps(_OI_MAPPING, indent=1))
    verified = [
        (f"oi:{a}", 3, "/m/09d_r", 1.0),
        (f"oi:{a}", 5, "/m/0bjyj5", 1.0),  # tie on confidence: the smaller label id wins
        (f"oi:{b}", 7, "/m/01yrx", 1.0),
        (f"oi:{f}", 3, "/m/09d_r", 1.0),
    ]
    extra = [(f"oi:{e}", 5, "/m/0bjyj5", 0.4), (f"oi:{e}", 7, "/m/01yrx", 0.7)]
    return OpenImagesFixture(
        labels_csv=labels,
        descriptions_csv=desc,
        mapping_json=mapping,
        num_classes=10,
        verified=verified,
        any_positive=sorted(verified + extra),
        unmapped=[0, 1, 2, 4, 6, 8, 9],
    )


# ----------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)


_IDX_CODE = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    dt = arr.dtype if arr.dtype.itemsize == 1 else arr.dtype.newbyteorder(">")
    header = bytes([0, 0, _IDX_CODE[np.dtype(dt)], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dt).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    data = idx_bytes(arr)
    Path(path).write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return Path(path)


@dataclass
class FashionMNISTFixture:
    dir: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def write_fashion_mnist(tmp: Path, n_train: int = 6, n_test: int = 4) -> FashionMNISTFixture:
    """The four Fashion-MNIST files under their published names, with a few 28x28 images."""
    d = Path(tmp) / "fashion-mnist"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labs = (np.arange(n) * 3 % 10).astype(np.uint8)
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", labs)
        out[prefix] = (imgs, labs)
    return FashionMNISTFixture(d, *out["train"], *out["t10k"])


# ----------------------------------------------------------------------------------------------
# Stable Diffusion: tiny random pipelines saved in the diffusers layout (offline)


def clip_tokenizer_files(out_dir):
    """vocab.json + merges.txt equivalent to CLIP's tokenizer, from open_clip's BPE file."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    merges = gzip.open(path).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    byte_tokens = list(bytes_to_unicode().values())
    vocab = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "vocab.json"), "w") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f)
    with open(os.path.join(out_dir, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def tiny_sd_components(tmp, variation: bool):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              steps_offset=1)
    parts = dict(unet=unet, vae=vae, scheduler=scheduler, safety_checker=None, feature_extractor=None)
    if variation:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        parts["image_encoder"] = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            image_size=32, patch_size=4)).eval()
        parts["feature_extractor"] = CLIPImageProcessor(crop_size=32, size=32)
    else:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        clip_tokenizer_files(tmp / "tok")
        parts["tokenizer"] = CLIPTokenizer.from_pretrained(tmp / "tok", model_max_length=16)
        parts["text_encoder"] = CLIPTextModel(CLIPTextConfig(
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32, intermediate_size=37,
            num_attention_heads=4, num_hidden_layers=2, vocab_size=49408, max_position_embeddings=16)).eval()
    return parts


def write_tiny_sd(tmp: Path) -> tuple[Path, Path]:
    """A txt2img/img2img pipeline dir and an image-variation pipeline dir, tiny and random."""
    from diffusers import StableDiffusionImageVariationPipeline, StableDiffusionPipeline

    tmp = Path(tmp)
    StableDiffusionPipeline(**tiny_sd_components(tmp, False), requires_safety_checker=False).save_pretrained(tmp / "sd")
    StableDiffusionImageVariationPipeline(**tiny_sd_components(tmp, True), requires_safety_checker=False) \
        .save_pretrained(tmp / "sdvar")
    return tmp / "sd", tmp / "sdvar"
