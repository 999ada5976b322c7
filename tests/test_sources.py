from __future__ import annotations

import io
import json
import os
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from selectbench.core.errors import UserError
from selectbench.core.index import INDEX_COLUMNS
from selectbench.core.openimages import OpenImagesLabels
from selectbench.full.decode import Source, decode_image, to_array
from selectbench.full.imagefolder import (
    ImageFolderSource,
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenet_v2,
    published_wnids,
)
from selectbench.full.laion import LaionSource

try:
    from tests import fixtures as fx
except ImportError:  # pytest puts tests/ itself on sys.path when tests/ is not a package
    import fixtures as fx


def _check_meta(src, n):
    m = src.meta()
    assert len(m) == len(src) == n
    assert m["sample_id"].is_unique
    assert m["sample_id"].str.startswith(src.name + ":").all()
    assert m["label"].dtype == np.int64
    assert (m["caption"].map(type) == str).all()
    return m


# ---------------------------------------------------------------------------- to_array


@pytest.mark.parametrize(
    "kind, rgb",
    [
        ("cmyk_jpeg", (0, 255, 255)),  # pure cyan, Adobe-inverted CMYK read correctly
        ("la_png", (255, 255, 255)),  # transparent -> white page
        ("rgba_png", (0, 0, 255)),
        ("huge_jpeg", (0, 200, 0)),
        ("tall_png", (200, 100, 0)),
    ],
)
def test_to_array_modes_rgb(kind, rgb):
    img, reason = decode_image(fx.image_bytes(kind), draft_size=32)
    assert reason is None
    a = to_array(img, 16, "RGB")
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    assert np.abs(a.reshape(-1, 3).mean(0) - rgb).max() <= 4


def test_to_array_palette_transparency_and_16bit():
    pal = Image.open(io.BytesIO(fx.image_bytes("palette_png")))
    assert pal.mode == "P"
    a = to_array(pal, 32, "RGB", fit="squash")
    assert (a[:, :12] == 255).all()  # transparent half composited on white
    assert (a[:, 20:] == (255, 0, 0)).all()
    g16 = Image.open(io.BytesIO(fx.image_bytes("gray16_png")))
    assert g16.mode.startswith("I;16")
    g = to_array(g16, 8, "L")
    assert g.shape == (8, 8) and abs(int(g.mean()) - 128) <= 1  # scaled, not clipped to 255
    assert to_array(Image.new("F", (9, 9), 0.5), 4, "L").mean() == pytest.approx(128, abs=1)
    assert to_array(Image.new("1", (9, 9), 1), 4, "RGB").min() == 255


def test_to_array_huge_uses_draft_without_full_decode():
    img = Image.open(io.BytesIO(fx.image_bytes("huge_jpeg")))
    a = to_array(img, 64, "L")
    assert a.shape == (64, 64)
    assert img.size[0] <= 6000 // 8 * 2  # decoded at reduced scale
    with pytest.raises(ValueError):
        to_array(img, 0, "L")
    with pytest.raises(ValueError):
        to_array(img, 8, "CMYK")


def test_decode_image_reasons():
    assert decode_image(b"") == (None, "zero_byte")
    assert decode_image(fx.image_bytes("not_image")) == (None, "unreadable")
    assert decode_image(fx.image_bytes("truncated_jpeg")) == (None, "truncated")


# ---------------------------------------------------------------------------- ImageFolder


def test_imagefolder_mixed_modes(tmp_path):
    f = fx.write_imagefolder(tmp_path)
    src = ImageFolderSource(f.root, f.wnids, name="imagenet")
    assert isinstance(src, Source)
    m = _check_meta(src, f.n_items)
    assert m["label"].value_counts().to_dict() == f.label_counts
    assert set(m["path"]) == set(f.kinds)  # README.txt / notes.txt skipped
    assert (m["caption"] == "").all()
    ok = 0
    for row, img in src.load(range(len(src)), draft_size=32):
        if img is not None:
            for mode, shape in (("RGB", (24, 24, 3)), ("L", (24, 24))):
                assert to_array(img, 24, mode).shape == shape
            ok += 1
    assert ok == f.n_items - sum(f.errors.values())
    assert src.errors == f.errors
    assert {m["path"][r].split("/")[1] for r in src.failed} == {"truncated.JPEG", "empty.JPEG", "garbage.jpg"}


def test_imagefolder_load_order_and_missing(tmp_path):
    f = fx.write_imagefolder(tmp_path)
    src = ImageFolderSource(f.root)  # no class list: sorted folders numbered 0..C-1
    assert sorted(src.meta()["label"].unique()) == [0, 1, 2]
    rows = [4, 0, 4]
    assert [r for r, _ in src.load(rows)] == rows
    os.remove(f.root / src.meta()["path"][0])
    assert [img for _, img in src.load([0])] == [None]
    assert src.errors["missing"] == 1
    with pytest.raises(IndexError):
        list(src.load([len(src)]))


def test_imagefolder_unknown_folder_is_user_error(tmp_path):
    f = fx.write_imagefolder(tmp_path)
    with pytest.raises(UserError, match=fx.WNIDS[7]):
        ImageFolderSource(f.root, f.wnids[:6])
    with pytest.raises(UserError, match="not an integer"):
        ImageFolderSource(f.root, class_index_from="int")


@pytest.mark.parametrize(
    "variant, ctor", [("imagenet_v2", imagenet_v2), ("imagenet_r", imagenet_r), ("imagenet_a", imagenet_a), ("imagenet_sketch", imagenet_sketch)]
)
def test_imagenet_variant_layouts(tmp_path, variant, ctor):
    f = fx.write_imagenet_variant(tmp_path, variant)
    src = ctor(f.root, f.wnids)
    m = _check_meta(src, f.n_items)
    assert src.name == variant
    assert m["label"].value_counts().to_dict() == f.label_counts
    assert (m["class_name"] == [f.wnids[i] for i in m["label"]]).all()
    assert all(img is not None for _, img in src.load(range(len(src))))


def test_imagenet_v2_index_range_and_wnid_file(tmp_path):
    f = fx.write_imagenet_variant(tmp_path, "imagenet_v2")
    # Folder "10" is the 11th sorted ImageNet wnid: outside a 10-class run it is skipped and counted.
    sub = imagenet_v2(f.root, f.wnids[:10])
    assert sub.meta()["label"].value_counts().to_dict() == {0: 1, 2: 2} and sub.skipped == {"10": 1}
    r = fx.write_imagenet_variant(tmp_path, "imagenet_r")
    wnid_file = tmp_path / "wnids.txt"
    wnid_file.write_text("".join(f"{w} name {i}\n" for i, w in enumerate(r.wnids)))
    assert imagenet_r(r.root, wnid_file).meta()["label"].value_counts().to_dict() == r.label_counts


def test_imagenet_v2_labels_follow_the_sorted_1000_wnids_whatever_the_class_list_order(tmp_path):
    f = fx.write_imagenet_variant(tmp_path, "imagenet_v2")
    sorted_1k = published_wnids("imagenet")
    assert len(sorted_1k) == 1000 and sorted_1k == sorted(sorted_1k) and sorted_1k[:12] == list(fx.WNIDS)
    shuffled = list(np.random.default_rng(0).permutation(sorted_1k))
    m = imagenet_v2(f.root, shuffled).meta()
    pos = {w: i for i, w in enumerate(shuffled)}
    # folder k holds class sorted_1k[k]: its label is that wnid's position in the run's list
    want = {pos[sorted_1k[k]]: n for k, n in f.label_counts.items()}
    assert m["label"].value_counts().to_dict() == want
    assert set(m["class_name"]) == {sorted_1k[k] for k in f.label_counts}
    with pytest.raises(UserError, match="indexes 0..999"):
        (f.root / "imagenetv2-matched-frequency-format-val" / "1000").mkdir()
        imagenet_v2(f.root, shuffled)


def test_imagenet_r_and_a_keep_the_run_classes_and_refuse_unpublished_folders(tmp_path):
    r = fx.write_imagenet_variant(tmp_path, "imagenet_r")  # folders WNIDS[1], WNIDS[9]
    src = imagenet_r(r.root, [fx.WNIDS[9], fx.WNIDS[1]])  # another order: labels follow it
    assert src.meta()["label"].value_counts().to_dict() == {1: 2, 0: 1} and src.skipped == {}
    only = imagenet_r(r.root, [fx.WNIDS[1], fx.WNIDS[3]])
    assert only.meta()["label"].value_counts().to_dict() == {0: 2} and only.skipped == {fx.WNIDS[9]: 1}
    assert fx.WNIDS[0] not in published_wnids("imagenet_r")  # tench is not one of ImageNet-R's 200
    (r.root / "imagenet-r" / fx.WNIDS[0]).mkdir()
    with pytest.raises(UserError, match="not one of imagenet_r's 200 published classes"):
        imagenet_r(r.root, fx.WNIDS)


# ---------------------------------------------------------------------------- LAION


def test_laion_meta_embeddings_and_images(tmp_path):
    f = fx.write_laion(tmp_path)
    src = LaionSource(f.root)
    assert isinstance(src, Source)
    m = _check_meta(src, 10)
    assert list(m["sample_id"]) == [f"laion:{k}" for k in f.keys]
    assert list(m["caption"]) == f.captions
    assert (m["label"] == -1).all()
    img = src.image_embeddings()
    txt = src.text_embeddings(mmap=False)
    assert img.shape == txt.shape == (10, f.dim) and img.dtype == np.float16
    assert list(img[:, 0]) == list(range(10)) and list(txt[:, 0]) == [-i for i in range(10)]
    np.testing.assert_array_equal(img[3], fx.laion_embedding("img", 3, f.dim))
    np.testing.assert_array_equal(src.embeddings("img", rows=[7, 2, 5])[:, 0], [7, 2, 5])

    got = dict(src.load(range(10)))
    assert list(got) == list(range(10))
    bad = {f.keys.index(k) for k in (f.truncated_key, f.zero_byte_key, f.missing_key)}
    assert {r for r, im in got.items() if im is None} == bad
    assert all(got[r].size == (40, 30) for r in set(range(10)) - bad)
    assert src.errors == f.errors
    idx = src.shard_index()
    assert len(idx) == 9 and idx["key"].is_unique  # .txt/.json members not indexed


def test_laion_index_cache_reused_and_invalidated(tmp_path, monkeypatch):
    f = fx.write_laion(tmp_path)
    cache = tmp_path / "cache" / "shards.parquet"
    assert len(LaionSource(f.root, index_cache=cache).shard_index()) == 9
    assert cache.exists()
    with monkeypatch.context() as mp:
        mp.setattr(LaionSource, "_scan_shards", lambda self, shards: pytest.fail("rescanned despite a fresh cache"))
        src = LaionSource(f.root, index_cache=cache)
        assert len(src.shard_index()) == 9
        assert sum(im is not None for _, im in src.load(range(10))) == 7
    f.shards[1].unlink()  # shard set changed: cache stale, rebuilt
    src = LaionSource(f.root, index_cache=cache)
    assert len(src.shard_index()) == 5
    assert [im is None for _, im in src.load([5, 6])] == [True, True]
    assert src.errors["missing"] == 2


def test_laion_alignment_errors(tmp_path):
    f = fx.write_laion(tmp_path)
    bad = f.part_files["text_emb"][1]
    np.save(bad, np.zeros((4, f.dim), np.float16))
    with pytest.raises(UserError, match=r"text_emb_0001\.npy: 4 rows but metadata_0001\.parquet has 5"):
        LaionSource(f.root)
    f.part_files["img_emb"][0].unlink()
    with pytest.raises(UserError, match=r"img_emb_0000\.npy: missing"):
        LaionSource(f.root)


def test_laion_dim_mismatch_orphan_part_and_bad_npy(tmp_path):
    f = fx.write_laion(tmp_path)
    np.save(f.part_files["img_emb"][1], np.zeros((5, f.dim + 1), np.float16))
    with pytest.raises(UserError, match=r"img_emb_0001\.npy: embedding dim"):
        LaionSource(f.root)
    np.save(f.part_files["img_emb"][1], np.zeros((5, f.dim), np.float16))
    np.save(f.root / "img_emb" / "img_emb_0007.npy", np.zeros((5, f.dim), np.float16))
    with pytest.raises(UserError, match=r"img_emb_0007\.npy: embedding part 7 has no metadata"):
        LaionSource(f.root)
    (f.root / "img_emb" / "img_emb_0007.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError, match=r"img_emb_0007\.npy"):
        LaionSource(f.root)


def test_laion_unpadded_release_names_and_no_shards(tmp_path):
    f = fx.write_laion(tmp_path, parts=3, rows=2, pad=0)
    (f.root / "img_emb").rename(f.root / "images")  # LAION-400M embedding release folder names
    (f.root / "text_emb").rename(f.root / "texts")
    src = LaionSource(f.root, shards=tmp_path / "nowhere")
    assert len(src) == 6 and list(src.image_embeddings()[:, 0]) == list(range(6))
    with pytest.raises(UserError, match="nowhere"):
        list(src.load([0]))


def test_laion_truncated_shard_warns_and_keeps_earlier_members(tmp_path):
    f = fx.write_laion(tmp_path)
    raw = f.shards[1].read_bytes()
    f.shards[1].write_bytes(raw[:700])  # cut inside the first member's data
    src = LaionSource(f.root)
    with pytest.warns(UserWarning, match="00001.tar: tar ends early"):
        ok = [r for r, im in src.load(range(10)) if im is not None]
    assert ok == [0, 1, 2, 4]
    assert src.errors == Counter({"truncated": 2, "missing": 4})


def test_laion_duplicate_key_is_user_error(tmp_path):
    f = fx.write_laion(tmp_path)
    p = f.part_files["metadata"][1]
    df = pd.read_parquet(p)
    df.loc[0, "key"] = f.keys[0]
    df.to_parquet(p, index=False)
    with pytest.raises(UserError, match="metadata_0001.parquet: key '000000000' occurs twice"):
        LaionSource(f.root).meta()


def _laion_columns(f, key=None):
    """The fixture's metadata rewritten with LAION-400M's own columns (SAMPLE_ID, URL, TEXT, ...,
    no `key`); key='sample_id' adds a `key` column holding SAMPLE_ID, the mistake img2dataset's
    keys never match."""
    for n, p in enumerate(f.part_files["metadata"]):
        df = pd.read_parquet(p)
        ids = 1_000_000 + 7919 * (n * len(df) + np.arange(len(df)))
        out = pd.DataFrame({"SAMPLE_ID": ids, "URL": df["url"], "TEXT": df["caption"], "HEIGHT": df["height"],
                            "WIDTH": df["width"], "LICENSE": df["LICENSE"], "NSFW": df["NSFW"],
                            "similarity": df["similarity"]})
        if key == "sample_id":
            out["key"] = ids.astype(str)
        out.to_parquet(p, index=False)


def test_laion_original_columns_join_tars_by_img2dataset_key_not_sample_id(tmp_path):
    f = fx.write_laion(tmp_path)
    _laion_columns(f)
    src = LaionSource(f.root)
    m = src.meta()
    assert list(m["key"]) == f.keys and src.key_from == "img2dataset rule"
    assert list(m["caption"]) == f.captions
    ok, reason, facts = src.image_check()
    assert Counter(reason[~ok].tolist()) == {"not_in_tar": 1, "zero_byte": 1}
    assert reason[f.keys.index(f.missing_key)] == "not_in_tar"
    assert facts == {"key_from": "img2dataset rule", "keys_name_shards": 1, "keys_name_present": 1, "tars": 2}
    assert sum(im is not None for _, im in src.load(range(10))) == 7  # the truncated member fails only on decoding


def test_laion_key_rule_counts_shards_per_file_in_name_order(tmp_path):
    # img2dataset reads metadata_0, metadata_1, metadata_10, metadata_2, ... and starts a shard per file.
    f = fx.write_laion(tmp_path, parts=11, rows=3, pad=0)
    _laion_columns(f)
    m = LaionSource(f.root).meta()
    assert m.loc[m["part"] == 10, "key"].tolist() == ["000020000", "000020001", "000020002"]
    assert m.loc[m["part"] == 2, "key"].tolist()[0] == "000030000"
    small = LaionSource(f.root, samples_per_shard=2).meta()  # 2 shards per 3-row file, 1-digit row
    assert small.loc[small["part"] == 0, "key"].tolist() == ["000000", "000001", "000010"]
    assert small.loc[small["part"] == 1, "key"].tolist() == ["000020", "000021", "000030"]


def test_laion_failed_downloads_and_missing_tars_are_told_apart(tmp_path):
    f = fx.write_laion(tmp_path)
    shard_meta = f.root / "shards" / "00001.parquet"
    df = pd.read_parquet(shard_meta)
    df.loc[df["key"] == f.missing_key, "status"] = "failed_to_download"  # img2dataset wrote no member
    df.to_parquet(shard_meta, index=False)
    f.shards[0].unlink()  # a shard never downloaded
    ok, reason, _ = LaionSource(f.root).image_check()
    assert Counter(reason[~ok].tolist()) == {"tar_missing": 5, "download_failed": 1, "zero_byte": 1}
    assert ok.tolist() == [False] * 5 + [True, True, False, True, False]


def _laion_pool(f):
    from selectbench.full.build import laion_rows

    src = LaionSource(f.root)
    src.shard_index()
    return laion_rows(src, {"size": 32, "workers": 2}, {"samples_per_shard": 10000, "shard_digits": 5,
                                                        "min_match": 0.5})


def test_laion_pool_rows_known_answer(tmp_path):
    f = fx.write_laion(tmp_path)
    _laion_columns(f)
    ok, stats = _laion_pool(f)
    assert stats == {"key_from": "img2dataset rule", "rows": 10, "kept": 7,
                     "left_out": {"not_in_tar": 1, "truncated": 1, "zero_byte": 1}}
    assert np.flatnonzero(~ok).tolist() == sorted(f.keys.index(k) for k in (f.truncated_key, f.zero_byte_key,
                                                                            f.missing_key))


def test_laion_pool_fails_when_keys_do_not_join(tmp_path):
    f = fx.write_laion(tmp_path)
    _laion_columns(f, key="sample_id")
    with pytest.raises(UserError, match=r"full.laion.min_match: only 0 of 10 LAION rows \(0%\) have an image.*"
                                        r"keys do not follow img2dataset's rule"):
        _laion_pool(f)


def test_laion_pool_fails_when_most_tars_are_missing(tmp_path):
    f = fx.write_laion(tmp_path)
    f.shards[0].unlink()
    with pytest.raises(UserError, match=r"only 4 of 10 LAION rows \(40%\).*1 of the 2 tars the keys name are missing"):
        _laion_pool(f)


def test_laion_join_failure_is_one_line_from_the_pool_stage(tmp_path):
    import subprocess
    import sys

    import yaml

    from tests.project import ROOT

    f = fx.write_laion(tmp_path)
    _laion_columns(f, key="sample_id")
    (tmp_path / "data/meta").mkdir(parents=True)
    (tmp_path / "data/meta/classes.yaml").write_text(yaml.safe_dump({"classes": [
        {"wnid": w, "name": f"c{i}", "synonyms": [f"c{i}"], "definition": f"c{i}"} for i, w in enumerate(fx.WNIDS[:4])]}))
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["profile"] = "full"
    p["full"]["laion"]["root"] = str(f.root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, "-m", "stages.pool"], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: full.laion.min_match: only 0 of 10"), r.stderr
    assert "pass img2dataset's `key` column" in r.stderr


def test_decodable_counts_every_broken_file_and_keeps_odd_but_valid_ones(tmp_path):
    from selectbench.full.decode import decodable

    f = fx.write_imagefolder(tmp_path)
    src = ImageFolderSource(f.root, f.wnids)
    for workers in (1, 2):
        ok, why = decodable(src, size=16, workers=workers, chunk=3)
        assert why == f.errors and ok.sum() == f.n_items - sum(f.errors.values())
    bad = {src.meta()["path"][i].split("/")[1] for i in np.flatnonzero(~ok)}
    assert bad == {"truncated.JPEG", "empty.JPEG", "garbage.jpg"}


# ---------------------------------------------------------------------------- external-data manifests


def test_manifest_sees_edits_removals_and_touches_and_reuses_hashes(tmp_path, monkeypatch):
    from selectbench.core import manifest as M

    f = fx.write_laion(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_text("ImageID,Source,LabelName,Confidence\na,crowd,/m/x,1\n")
    srcs = {"laion": str(f.root), "csv": str(csv), "unset": None, "gone": str(tmp_path / "nowhere")}
    cache = tmp_path / "hashes.json"

    def body():
        c = M.HashCache(cache)
        out = M.write(tmp_path / "m.json", srcs, c)
        c.save()
        return out, (tmp_path / "m.json").read_bytes()

    first, raw = body()
    laion = first["sources"]["laion"]
    assert laion["files"] == 2 * 3 + 2 * 3 and set(laion["entries"]) == {"metadata", "img_emb", "text_emb", "shards"}
    assert sorted(laion["content_sha256"]) == [  # metadata hashed; tars and .npy by size and mtime only
        "metadata/metadata_0000.parquet", "metadata/metadata_0001.parquet", "shards/00000.parquet",
        "shards/00000_stats.json", "shards/00001.parquet", "shards/00001_stats.json"]
    assert first["sources"]["unset"] is None and first["sources"]["gone"] == {"path": srcs["gone"], "missing": True}
    with monkeypatch.context() as mp:  # unchanged files: same bytes, nothing reread
        mp.setattr(M, "_sha256", lambda path: pytest.fail(f"rehashed unchanged {path}"))
        assert body()[1] == raw
    st = csv.stat()
    csv.write_text("ImageID,Source,LabelName,Confidence\nb,crowd,/m/x,1\n")  # same size, same mtime
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited, raw2 = body()
    assert raw2 != raw and edited["sources"]["csv"]["sha256"] != first["sources"]["csv"]["sha256"]
    f.shards[1].unlink()
    removed, _ = body()
    changed = {k for k, e in removed["sources"]["laion"]["entries"].items() if e != laion["entries"].get(k)}
    assert changed == {"shards"} and removed["sources"]["laion"]["files"] == laion["files"] - 1
    os.utime(f.part_files["img_emb"][0], ns=(1, 1))  # a touch: the listing digest changes
    touched, _ = body()
    assert touched["sources"]["laion"]["entries"]["img_emb"] != removed["sources"]["laion"]["entries"]["img_emb"]


def test_manifests_stage_is_constant_in_the_embedded_profile(tmp_path, monkeypatch):
    import yaml

    from stages.manifests import main
    from tests.project import ROOT

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["full"]["imagenet"]["train"] = str(tmp_path)  # set, but the embedded profile does not read it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    main([])
    got = {n: json.loads((tmp_path / f"data/manifests/{n}.json").read_text()) for n in ("imagenet", "pool", "vtab")}
    assert got == {"imagenet": {"read": False, "why": "profile embedded"}, "pool": {"read": False, "why": "profile embedded"},
                   "vtab": {"read": True, "sources": {"transfer.vtab_root": None}}}


# ---------------------------------------------------------------------------- OpenImages


def _rows(df):
    return [(s, int(label), o, round(float(sc), 6)) for s, label, o, sc in zip(df["sample_id"], df["label"], df["oi_label"], df["score"])]


@pytest.mark.parametrize("chunksize", [2, 1000])
def test_openimages_curate(tmp_path, chunksize):
    f = fx.write_openimages(tmp_path)
    oi = OpenImagesLabels(f.labels_csv, f.descriptions_csv, f.mapping_json, chunksize=chunksize)
    df = oi.curate()
    assert list(df.columns[:4]) == list(INDEX_COLUMNS)
    assert df.dtypes[list(INDEX_COLUMNS)].astype(str).tolist() == [str(pd.Series([], dtype=t).dtype) for t in INDEX_COLUMNS.values()]
    assert (df["source"] == "openimages").all() and (df["score"] == 1).all()
    assert _rows(df) == f.verified  # once per mapped class, duplicates and negatives gone
    assert _rows(oi.curate(verified_only=False)) == f.any_positive
    assert oi.unmapped_classes(f.num_classes) == f.unmapped
    with pytest.raises(UserError, match="outside 0..4"):
        oi.unmapped_classes(5)


def test_openimages_input_errors(tmp_path):
    f = fx.write_openimages(tmp_path)
    f.mapping_json.write_text('{"Mountain": 3}')
    with pytest.raises(UserError, match="not in"):
        OpenImagesLabels(f.labels_csv, f.descriptions_csv, f.mapping_json)
    f.mapping_json.write_text('{"/m/09d_r": "alp"}')
    with pytest.raises(UserError, match="class index"):
        OpenImagesLabels(f.labels_csv, f.descriptions_csv, f.mapping_json)
    f.mapping_json.write_text('{"/m/09d_r": [3, 4]}')
    headerless = tmp_path / "class-descriptions.csv"  # pre-v6 files have no header line
    headerless.write_text("/m/09d_r,Mountain\n/m/0k4j,Car\n")
    oi = OpenImagesLabels([f.labels_csv, f.labels_csv], headerless, f.mapping_json)
    assert sorted(oi.curate()["label"]) == [3, 3, 4, 4]
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageID,LabelName\nx,/m/09d_r\n")
    with pytest.raises(UserError, match="lacks columns.*Confidence"):
        OpenImagesLabels(bad, f.descriptions_csv, f.mapping_json).curate()


# ---------------------------------------------------------------------------- Fashion-MNIST / IDX
