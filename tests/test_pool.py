"""The web-like pool, its crowd labels and the held-out natural set (selectbench/pool.py)."""
from __future__ import annotations

import copy
import filecmp
import io
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw

from selectbench.core.errors import UserError
from selectbench.embedded import captions, clipart, config, emoji, fmnist, pool
from selectbench.embedded import crowd as crowd_sim
from selectbench.embedded import meta as meta_files
from stages.pool import main

OPENCLIPART = Path("/usr/share/openclipart/png")
NATURAL_TSHIRT = "people/clothing/t-shirt_01.png"
OUTPUTS = ("pool/images.npy", "pool/meta.parquet", "pool/crowd_labels.csv", "pool/stats.json",
           "natural/images.npy", "natural/meta.parquet")


def _train(per_class_part1: int = 200, per_class_part0: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class_part1 + per_class_part0)
    part = np.tile(np.r_[np.ones(per_class_part1), np.zeros(per_class_part0)], 10).astype(np.int8)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for i, c in enumerate(labels):
        images[i, 4 + c : 24, 6 : 22 - c // 2] = 120 + rng.integers(0, 100)
    return {"images": images, "labels": labels.astype(np.int64), "part": part}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory) -> Path:
    """A small clip-art tree with good, broken and held-out files."""
    root = tmp_path_factory.mktemp("clipart")
    (root / "animals").mkdir()
    (root / "shapes").mkdir()
    (root / "people" / "clothing").mkdir(parents=True)
    (root / "recreation" / "sports").mkdir(parents=True)
    cat = Image.new("RGBA", (120, 80), (0, 0, 0, 0))
    ImageDraw.Draw(cat).ellipse((10, 10, 110, 70), fill=(30, 30, 30, 255))
    (root / "animals" / "black_cat_01.png").write_bytes(_png(cat))
    dog = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(dog).rectangle((8, 20, 56, 44), fill=(200, 40, 40))
    (root / "animals" / "red_dog.png").write_bytes(_png(dog))
    arms = Image.new("P", (50, 70), 0)
    arms.putpalette([255, 255, 255, 0, 0, 128] + [0] * 762)
    ImageDraw.Draw(arms).polygon([(5, 5), (45, 5), (25, 65)], fill=1)
    (root / "people" / "clothing" / "coat_of_arms_x.png").write_bytes(_png(arms))
    (root / "shapes" / "empty.png").write_bytes(b"")
    (root / "shapes" / "truncated.png").write_bytes(_png(cat)[:200])
    (root / "shapes" / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    (root / "shapes" / "blank.png").write_bytes(_png(Image.new("RGBA", (40, 40), (0, 0, 0, 0))))
    if OPENCLIPART.is_dir():
        src = OPENCLIPART / NATURAL_TSHIRT
        shutil.copy(src, root / NATURAL_TSHIRT)
        shutil.copy(src, root / "recreation" / "sports" / "tshirt_copy.png")
        with Image.open(src) as im:
            flat = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA")).convert("RGB")
        (root / "recreation" / "sports" / "tshirt_resaved.png").write_bytes(_png(flat))
    return root


def _cfg(clip_root: Path, **over) -> dict:
    cfg = copy.deepcopy(config.default_cfg())
    cfg["workers"] = 1
    cfg["fmnist"]["n"] = 300
    cfg["clipart"].update(root=str(clip_root), max=50)
    emoji_ok = Path(cfg["emoji"]["font"]).is_file() and Path(cfg["emoji"]["test_file"]).is_file()
    cfg["emoji"].update(enabled=emoji_ok, max=40)
    cfg["mnist"].update(enabled=False)
    for dotted, value in over.items():
        node = cfg
        *head, last = dotted.split("__")
        for h in head:
            node = node[h]
        node[last] = value
    return cfg


def _write_inputs(tmp: Path, cfg: dict, train: dict) -> tuple[Path, Path]:
    params, train_path = tmp / "params.yaml", tmp / "train.npz"
    params.write_text(yaml.safe_dump({"pool": cfg}))
    np.savez(train_path, **train)
    return params, train_path


@pytest.fixture(scope="module")
def built(tmp_path_factory, clip_root):
    """One build through the CLI (mnist on), kept for the read-only assertions below."""
    tmp = tmp_path_factory.mktemp("built")
    train = _train()
    cfg = _cfg(clip_root, mnist__enabled=True, mnist__n=100)
    params, train_path = _write_inputs(tmp, cfg, train)
    assert main(["--params", str(params), "--train", str(train_path),
                 "--out", str(tmp / "pool"), "--natural-out", str(tmp / "natural")]) == 0
    stats = json.loads((tmp / "pool" / "stats.json").read_text())
    return {"dir": tmp, "train": train, "cfg": cfg, "stats": stats,
            "meta": pd.read_parquet(tmp / "pool" / "meta.parquet"),
            "images": np.load(tmp / "pool" / "images.npy"),
            "natural": pd.read_parquet(tmp / "natural" / "meta.parquet"),
            "crowd": pd.read_csv(tmp / "pool" / "crowd_labels.csv")}


def test_same_params_give_byte_identical_outputs_with_any_worker_count(built, tmp_path):
    # The CLI build above and two API builds (1 and 2 worker processes) must agree byte for byte.
    for workers in (1, 2):
        cfg = copy.deepcopy(built["cfg"])
        cfg["workers"] = workers
        out = tmp_path / f"w{workers}"
        pool.build_pool(built["train"], cfg, out / "pool", out / "natural")
        for rel in OUTPUTS:
            assert filecmp.cmp(built["dir"] / rel, out / rel, shallow=False), (workers, rel)


def test_output_contract(built):
    meta, images = built["meta"], built["images"]
    assert images.dtype == np.uint8 and images.shape == (len(meta), 28, 28)
    assert list(meta.columns) == ["sample_id", "source", "origin", "caption", "true_label"]
    assert meta["true_label"].dtype == np.int64
    assert meta["sample_id"].tolist() == [f"pool:{i:07d}" for i in range(len(meta))]
    assert set(meta["source"]) <= set(config.SOURCES)
    assert (meta.loc[meta["source"] != "fmnist", "true_label"] == -1).all()
    assert meta.loc[meta["source"] == "mnist", "caption"].str.contains(r"\d").all()
    # Base format: bright object on a black border.
    border = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, :, 0], images[:, :, -1]], axis=1)
    clip = (meta["source"] != "fmnist").to_numpy()
    assert np.median(border[clip]) == 0 and np.median(images[clip].max(axis=(1, 2))) > 150
    nat = built["natural"]
    assert list(nat.columns) == ["sample_id", "source", "origin", "caption", "label"]
    assert nat["sample_id"].tolist() == [f"natural:{i:05d}" for i in range(len(nat))]
    assert np.load(built["dir"] / "natural" / "images.npy").shape == (len(nat), 28, 28)


def test_pool_uses_only_part1_rows(built):
    meta, part = built["meta"], built["train"]["part"]
    rows = meta.loc[meta["source"] == "fmnist", "origin"].str.replace("fmnist_train:", "").astype(int)
    assert len(rows) == 300 and rows.is_unique
    assert (part[rows.to_numpy()] == 1).all()
    # The hidden label is the row's real label.
    fm = meta[meta["source"] == "fmnist"]
    assert (fm["true_label"].to_numpy() == built["train"]["labels"][rows.to_numpy()]).all()


def test_zipf_head_that_does_not_fit_part1_is_a_one_line_error(clip_root, tmp_path):
    # 300 items at exponent 1 need 103 rows of the top class; only 50 part==1 rows per class exist.
    with pytest.raises(UserError, match=r"^pool\.fmnist\.n: .*only 50 part==1 rows"):
        pool.build_pool(_train(per_class_part1=50), _cfg(clip_root), tmp_path / "p", tmp_path / "n")


def test_zipf_skew():
    rng = np.random.default_rng(0)
    counts, order = fmnist.zipf_counts(8000, 10, 1.0, rng)
    ranked = counts[order]
    assert counts.sum() == 8000 and (np.diff(ranked) <= 0).all()
    assert ranked[0] / ranked[-1] == pytest.approx(10, rel=0.01)
    slope = -np.polyfit(np.log(np.arange(1, 11)), np.log(ranked), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.01)
    flat, _ = fmnist.zipf_counts(8000, 10, 0.0, rng)
    assert (flat == 800).all()


def test_built_pool_class_histogram_is_skewed(built):
    hist = built["meta"].loc[built["meta"]["source"] == "fmnist", "true_label"].value_counts()
    assert len(hist) == 10 and hist.max() / hist.min() > 5
    assert built["stats"]["fmnist"]["zipf_exponent_fit"] == pytest.approx(1.0, abs=0.05)


def test_caption_noise_rates_are_realised():
    classes = meta_files.load_classes(meta_files.META_DIR)
    labels = np.random.default_rng(1).integers(0, 10, 6000)
    ccfg = {"wrong_class_rate": 0.2, "no_class_word_rate": 0.15, "several_classes_rate": 0.1,
            "sibling_share": 0.7, "synonym_rate": 0.5, "extra_word_rate": 0.5}
    caps, kinds = captions.make_captions(labels, classes, ccfg, np.random.default_rng(2))
    realised = captions.caption_kind_realised(caps, labels, classes)
    # Filler words never name a class, so a matcher sees exactly the intended kind ...
    assert (realised == kinds).all()
    # ... and the rates match the params within ~4 binomial standard deviations.
    for kind, rate in ((1, 0.2), (2, 0.15), (3, 0.1), (0, 0.55)):
        assert np.mean(realised == kind) == pytest.approx(rate, abs=0.025), kind
    # Wrong class words favour the visually similar group.
    wrong = [(c, next(iter(classes.mentioned(s)))) for s, c, k in zip(caps, labels, kinds) if k == 1]
    with_sib = [(c, w) for c, w in wrong if classes.siblings[c]]
    share = np.mean([w in classes.siblings[c] for c, w in with_sib])
    assert share > 0.7
    # Synonyms replace the canonical name about half the time.
    names = [classes.names[c] for c in labels[kinds == 0]]
    uses_name = [n.lower() in s.lower() for n, s in zip(names, np.array(caps)[kinds == 0])]
    assert 0.35 < np.mean(uses_name) < 0.75


def test_filler_words_and_matcher():
    classes = meta_files.load_classes(meta_files.META_DIR)
    for words in (captions._COLOURS, captions._MATERIALS, captions._ADJECTIVES, captions._BRANDS, captions._WHO, captions._EXTRAS):
        for w in words:
            assert not classes.mentioned(w), w
    assert classes.mentioned("navy t-shirt") == {0}  # not also "shirt"
    assert classes.mentioned("Running Shoe and a Tote") == {7, 8}
    assert classes.mentioned("coat of arms") == {4}  # a false friend, as on the web
    assert classes.mentioned("backpacker trip, paperbag") == set()


def test_realised_noise_rates_reported(built):
    realised = built["stats"]["captions"]["realised"]
    assert realised["n"] == 300
    assert set(realised) >= {"wrong_class_rate", "no_class_word_rate", "several_classes_rate"}
    assert realised == built["stats"]["captions"]["intended"]


def test_unreadable_clipart_is_skipped_and_counted(built):
    skipped = built["stats"]["skipped"]["clipart"]
    assert skipped["empty_file"] == 1
    assert skipped["truncated"] == 1
    assert skipped["unreadable"] == 1
    assert skipped["blank"] == 1
    origins = set(built["meta"]["origin"])
    assert not origins & {"shapes/empty.png", "shapes/truncated.png", "shapes/garbage.png", "shapes/blank.png"}
    assert {"animals/black_cat_01.png", "animals/red_dog.png", "people/clothing/coat_of_arms_x.png"} <= origins


def test_clipart_decode_errors_are_classified(tmp_path):
    im = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
    ImageDraw.Draw(im).rectangle((10, 10, 50, 30), fill=(0, 0, 0, 255))
    data = _png(im)
    (tmp_path / "ok.png").write_bytes(data)
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _, arr, status, _ = clipart.load_clipart((str(tmp_path), "ok.png"))
    assert status == "ok" and arr.shape == (28, 28)
    # A 40x20 bar becomes a bright 28x14 bar, centred.
    rows, cols = np.flatnonzero(arr.max(1) > 100), np.flatnonzero(arr.max(0) > 100)
    assert cols.min() == 0 and cols.max() == 27 and 12 <= rows.size <= 16 and rows.min() >= 6
    assert clipart.load_clipart((str(tmp_path), "cut.png"))[2] == "truncated"
    assert clipart.load_clipart((str(tmp_path), "gone.png"))[2] == "missing"


@pytest.mark.skipif(not OPENCLIPART.is_dir(), reason="openclipart-png not installed")
def test_natural_items_are_held_out_of_the_pool(built):
    nat, meta, stats = built["natural"], built["meta"], built["stats"]
    assert NATURAL_TSHIRT in set(nat["origin"])
    assert nat.loc[nat["origin"] == NATURAL_TSHIRT, "label"].item() == 0
    pool_origins = set(meta["origin"])
    assert not pool_origins & set(nat["origin"])
    # The same drawing under another name is caught by content, byte-identical or re-saved.
    assert "recreation/sports/tshirt_copy.png" not in pool_origins
    assert "recreation/sports/tshirt_resaved.png" not in pool_origins
    skipped = stats["skipped"]["clipart"]
    assert skipped["held_out_natural"] == 1
    assert skipped["duplicate_of_natural"] == 1
    assert skipped["near_duplicate_of_natural"] == 1
    # Natural map entries absent from this small tree are counted, not fatal.
    assert stats["natural"]["skipped"]["clipart_missing"] == 15


def test_natural_emoji_include_skin_tone_variants(built):
    if not built["cfg"]["emoji"]["enabled"]:
        pytest.skip("emoji font not installed")
    nat = built["natural"]
    dancing = nat[nat["origin"].str.startswith("1F483")]
    assert len(dancing) == 6 and (dancing["label"] == 3).all()
    assert built["stats"]["skipped"]["emoji"]["held_out_natural"] == len(nat[nat["source"] == "emoji"])
    assert not set(nat.loc[nat["source"] == "emoji", "origin"]) & set(built["meta"]["origin"])


def test_crowd_labels_follow_openimages_format(built):
    crowd, meta = built["crowd"], built["meta"]
    assert list(crowd.columns) == ["ImageID", "Source", "LabelName", "Confidence"]
    assert set(crowd["ImageID"]) <= set(meta["sample_id"])
    assert set(crowd["Source"]) == {crowd_sim.CROWD_VERIFIED_SOURCE, crowd_sim.CROWD_MACHINE_SOURCE}
    verified = crowd["Source"] == crowd_sim.CROWD_VERIFIED_SOURCE
    assert set(crowd.loc[verified, "Confidence"]) == {0.0, 1.0}
    assert crowd.loc[~verified, "Confidence"].between(0.1, 0.9).all()
    vocab = pd.read_csv(meta_files.META_DIR / "crowd_vocab.csv")
    assert set(crowd["LabelName"]) <= set(vocab["LabelName"])


def test_crowd_simulation_has_openimages_character():
    classes = meta_files.load_classes(meta_files.META_DIR)
    vocab = meta_files.load_vocab(meta_files.META_DIR)
    mapping = meta_files.load_mapping(meta_files.META_DIR, vocab, 10)
    labels = np.repeat(np.arange(10), 300)
    ids = [f"pool:{i:07d}" for i in range(len(labels))]
    sib = {classes.names[c]: [classes.names[s] for s in classes.siblings[c]] for c in range(10)}
    ccfg = config.validate_cfg(config.default_cfg())["crowd"]
    crowd = crowd_sim.simulate_crowd(ids, [classes.names[c] for c in labels], vocab, sib, ccfg, np.random.default_rng(0))
    summary = crowd_sim.crowd_summary(crowd, mapping, dict(zip(ids, labels.tolist())), classes.names)
    per_class = summary["mapped_verified_positive_per_class"]
    # Classes without a label in the other schema stay empty; generic "Clothing" (-> shirt) pulls
    # in every garment, so shirt dwarfs the median class even though all classes are equal here.
    assert summary["empty_classes"] == ["pullover", "ankle boot"]
    assert per_class["shirt"] == max(per_class.values())
    assert summary["max_over_median_nonempty"] > 3
    assert summary["mapped_label_precision_per_class"]["shirt"] < 0.5
    assert summary["mapped_label_precision_per_class"]["trouser"] > 0.9
    # About half of the verified labels are negatives, as in OpenImages V4 (51.8%).
    assert 0.4 < summary["verified_positive_share"] < 0.65


def test_checked_in_metadata_is_consistent():
    classes = meta_files.load_classes(meta_files.META_DIR)
    vocab = meta_files.load_vocab(meta_files.META_DIR)
    mapping = meta_files.load_mapping(meta_files.META_DIR, vocab, 10)
    assert sorted(set(mapping.values())) == [0, 1, 3, 4, 5, 6, 7, 8]
    entries = meta_files.load_natural_map(meta_files.META_DIR, classes)
    keys = [(e.source, e.key) for e in entries]
    assert len(keys) == len(set(keys))
    if OPENCLIPART.is_dir():
        for e in entries:
            if e.source == "clipart":
                assert (OPENCLIPART / e.key).is_file(), e.key
    emoji_test = Path(config.default_cfg()["emoji"]["test_file"])
    if emoji_test.is_file():
        known = {e.cps for e in emoji.parse_emoji_test(emoji_test)}
        assert all(e.key in known for e in entries if e.source == "emoji")


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c["captions"].update(wrong_class_rate=1.5), "pool.captions.wrong_class_rate"),
        (lambda c: c["captions"].update(no_class_word_rate=0.6, wrong_class_rate=0.5), "pool.captions"),
        (lambda c: c["fmnist"].update(n="many"), "pool.fmnist.n"),
        (lambda c: c["crowd"].pop("coverage"), "pool.crowd.coverage"),
        (lambda c: c["perturb"].update(blurr_p=0.1), "pool.perturb.blurr_p"),
        (lambda c: c["clipart"].update(root="/nonexistent/clipart"), "pool.clipart.root"),
        (lambda c: c["mnist"].update(enabled="yes"), "pool.mnist.enabled"),
        (lambda c: c.update(workers=0), "pool.workers"),
    ],
)
def test_bad_params_exit_2_with_one_line_naming_the_key(edit, key, clip_root, tmp_path, capsys):
    cfg = _cfg(clip_root)
    edit(cfg)
    params, train_path = _write_inputs(tmp_path, cfg, _train(per_class_part1=120, per_class_part0=0))
    with pytest.raises(SystemExit) as exc:
        main(["--params", str(params), "--train", str(train_path),
              "--out", str(tmp_path / "pool"), "--natural-out", str(tmp_path / "natural")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {key}:") and "\n" not in err
    assert not (tmp_path / "pool").exists()


def test_bad_train_file_exit_2(clip_root, tmp_path, capsys):
    params, _ = _write_inputs(tmp_path, _cfg(clip_root), _train())
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(3, np.int64))
    for train_arg in (str(tmp_path / "missing.npz"), str(bad)):
        with pytest.raises(SystemExit) as exc:
            main(["--params", str(params), "--train", train_arg,
                  "--out", str(tmp_path / "pool"), "--natural-out", str(tmp_path / "natural")])
        assert exc.value.code == 2
    assert "lacks key 'part'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Bad and unusual image files through the stage


def _raw_png(w: int, h: int, depth: int, ctype: int, row: Callable[[int], bytes], rows: int | None = None) -> bytes:
    """A PNG built row by row (never the whole image in memory); `rows` < h writes a truncated IDAT."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    z = zlib.compressobj(6)
    idat = b"".join(z.compress(b"\0" + row(y)) for y in range(h if rows is None else rows)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


# An "L"-shaped drawing on a 60 px canvas, ink grey level 40: every good file below encodes it.
_INK = 40
_MASK = np.zeros((60, 60), bool)
_MASK[10:50, 10:22] = True
_MASK[38:50, 10:45] = True
_GOOD = ("ref_rgb.png", "rgba.png", "palette_trns.png", "cmyk_jpeg_named.png", "grey16.png", "rgb16.png",
         "big_9000px.png")
_BAD = {"zero_bytes.png": "empty_file", "truncated.png": "truncated", "huge_12000px.png": "too_large",
        "bomb_30000px.png": "too_large"}


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("badclip")
    d = root / "shapes"
    d.mkdir()
    grey = np.where(_MASK, _INK, 255).astype(np.uint8)
    (d / "ref_rgb.png").write_bytes(_png(Image.fromarray(grey).convert("RGB")))
    rgba = np.zeros((60, 60, 4), np.uint8)
    rgba[_MASK] = (_INK, _INK, _INK, 255)
    (d / "rgba.png").write_bytes(_png(Image.fromarray(rgba)))
    pal = Image.fromarray(_MASK.astype(np.uint8), mode="L").convert("P")
    pal.putpalette([255, 255, 255, _INK, _INK, _INK] + [0] * 762)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    (d / "palette_trns.png").write_bytes(buf.getvalue())
    # A CMYK JPEG under a .png name, as web crawls often have.
    cmyk = Image.merge("CMYK", [Image.new("L", (60, 60), 0)] * 3 + [Image.fromarray(255 - grey)])
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG", quality=95)
    (d / "cmyk_jpeg_named.png").write_bytes(buf.getvalue())
    g16 = (grey.astype(np.uint16) * 257).astype(">u2")
    (d / "grey16.png").write_bytes(_raw_png(60, 60, 16, 0, lambda y: g16[y].tobytes()))
    (d / "rgb16.png").write_bytes(_raw_png(60, 60, 16, 2, lambda y: np.repeat(g16[y], 3).tobytes()))
    # Under the pixel cap (81 Mpx, decoded and box-reduced); the same drawing scaled 150x.
    big_rows = [np.repeat(np.where(_MASK[r], _INK, 255).astype(np.uint8), 150).tobytes() for r in range(60)]
    (d / "big_9000px.png").write_bytes(_raw_png(9000, 9000, 8, 0, lambda y: big_rows[y // 150]))
    (d / "zero_bytes.png").write_bytes(b"")
    (d / "truncated.png").write_bytes((d / "ref_rgb.png").read_bytes()[:150])
    # 144 Mpx: above the cap, below PIL's hard bomb limit (a warning only); must be skipped unread.
    white = b"\xff" * 12000
    (d / "huge_12000px.png").write_bytes(_raw_png(12000, 12000, 8, 0, lambda y: white))
    # 900 Mpx claimed in the header, a few rows of data: PIL refuses it outright.
    (d / "bomb_30000px.png").write_bytes(_raw_png(30000, 30000, 8, 0, lambda y: b"\0" * 30000, rows=4))
    return root


def test_bad_clipart_files_are_counted_by_reason_and_good_ones_kept(bad_root, tmp_path, capsys):
    cfg = _cfg(bad_root, emoji__enabled=False)
    params, train_path = _write_inputs(tmp_path, cfg, _train())
    assert main(["--params", str(params), "--train", str(train_path),
                 "--out", str(tmp_path / "pool"), "--natural-out", str(tmp_path / "natural")]) == 0
    stats = json.loads((tmp_path / "pool" / "stats.json").read_text())
    want: dict[str, int] = {}
    for reason in _BAD.values():
        want[reason] = want.get(reason, 0) + 1
    assert stats["skipped"]["clipart"] == want
    log = capsys.readouterr().err
    for reason, n in want.items():
        assert f"{reason} {n}" in log, log
    meta = pd.read_parquet(tmp_path / "pool" / "meta.parquet")
    images = np.load(tmp_path / "pool" / "images.npy")
    clip = meta[meta["source"] == "clipart"]
    assert sorted(clip["origin"]) == sorted(f"shapes/{f}" for f in _GOOD)
    # Every good encoding of the drawing gives the same base-format picture as the 8-bit RGB file
    # (16-bit grey used to be clipped to white and came out as a solid square).
    by_origin = {o: images[i].astype(np.int16) for i, o in zip(clip.index, clip["origin"])}
    ref = by_origin["shapes/ref_rgb.png"]
    assert ref.max() > 150 and (ref < 20).mean() > 0.3
    for f in _GOOD:
        diff = np.abs(by_origin[f"shapes/{f}"] - ref).mean()
        assert diff < 12, (f, diff)
