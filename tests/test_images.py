"""selectbench.images: arrays and adapter pointers behind one array-like, and the full profile's
raw/pool builders' input checks."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from selectbench.core.errors import UserError
from selectbench.core.images import Subset, is_lazy, open_images, take
from selectbench.full import build
from selectbench.full.decode import PathSource
from selectbench.full.pointer import LazyImages, code_version, from_pointer, write_pointer


def _files(root, n, broken=()):
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = f"img{i}.png"
        if i in broken:
            (root / p).write_bytes(b"not an image")
        else:
            a = np.zeros((20, 30, 3), np.uint8)
            a[..., 0] = 10 * (i % 25)  # red channel encodes the row
            Image.fromarray(a).save(root / p)
        paths.append(p)
    return paths


def test_rows_slices_and_fancy_indexes_read_the_right_files(tmp_path):
    paths = _files(tmp_path / "a", 6)
    x = LazyImages({"a": PathSource(tmp_path / "a", paths)}, ["a"] * 6, np.arange(6), 16, "RGB")
    assert len(x) == 6 and x.shape == (6, 16, 16, 3)
    assert x[2].shape == (16, 16, 3) and x[2][0, 0, 0] == 20
    assert [im[0, 0, 0] for im in x[1:4]] == [10, 20, 30]
    assert [im[0, 0, 0] for im in x[np.array([5, 0, 5])]] == [50, 0, 50]
    assert x[-1][0, 0, 0] == 50
    with pytest.raises(IndexError):
        x[np.array([6])]


def test_several_parts_threads_and_broken_files(tmp_path):
    pa, pb = _files(tmp_path / "a", 3), _files(tmp_path / "b", 150, broken={7})
    origin = np.array(["b"] * 150 + ["a"] * 3, dtype=object)
    rows = np.concatenate([np.arange(150), np.arange(3)])
    parts = {"a": PathSource(tmp_path / "a", pa), "b": PathSource(tmp_path / "b", pb)}
    one = LazyImages(parts, origin, rows, 8, "L")
    many = LazyImages(parts, origin, rows, 8, "L", workers=3)
    imgs, ok = many.take(np.arange(153))
    ref, ok1 = one.take(np.arange(153))
    assert np.array_equal(imgs, ref) and np.array_equal(ok, ok1)
    assert imgs.shape == (153, 8, 8) and (~ok).sum() == 1 and not ok[7] and imgs[7].max() == 0
    assert many.failed == {7: "unreadable"}
    with pytest.raises(UserError, match="parts"):
        LazyImages(parts, np.array(["c"], dtype=object), np.array([0]), 8, "L")


def test_pointer_round_trip_and_open_images_prefers_arrays(tmp_path):
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    paths = _files(tmp_path / "imgs", 4)
    pd.DataFrame({"path": paths}).to_parquet(raw / "train.paths.parquet")
    write_pointer(raw / "train.images.json", {"x": {"kind": "files", "root": str(tmp_path / "imgs"),
                                                    "paths": "train.paths.parquet"}}, 16, "RGB", 1)
    np.savez(raw / "train.npz", labels=np.arange(4), part=np.zeros(4))
    x = open_images("train", tmp_path)
    assert isinstance(x, LazyImages) and len(x) == 4 and x[3][0, 0, 0] == 30
    spec = json.loads((raw / "train.images.json").read_text())
    # The adapter code's hash travels in the pointer, so a full-profile run reruns what decodes
    # through the adapters when their code changes (the embedded profile never imports them).
    assert spec["size"] == 16 and spec["code"] == code_version() and len(spec["code"]) == 64
    assert is_lazy(x) and not is_lazy(np.zeros((1, 2, 2)))
    np.savez(raw / "train.npz", images=np.full((4, 28, 28), 7, np.uint8), labels=np.arange(4))
    arr = open_images("train", tmp_path)
    assert isinstance(arr, np.ndarray) and arr.shape == (4, 28, 28)
    with pytest.raises(UserError, match="no images for 'pool'"):
        open_images("pool", tmp_path)
    with pytest.raises(UserError, match="kind"):
        write_pointer(tmp_path / "bad.json", {"x": {"kind": "zip"}}, 8, "L", 1)
        from_pointer(tmp_path / "bad.json")


def test_subset_and_take_work_on_arrays_and_lazy_images(tmp_path):
    arr = np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2)
    got, ok = take(arr, [4, 1])
    assert np.array_equal(got, arr[[4, 1]]) and ok.all()
    s = Subset(arr, [3, 0, 2])
    assert len(s) == 3 and np.array_equal(s[1:], arr[[0, 2]])


def test_full_profile_inputs_fail_with_one_line(tmp_path):
    p = {"full": {"image_size": 36, "decode_workers": 1}}
    with pytest.raises(UserError, match="multiple of 8"):
        build.settings(p)
    p["full"]["image_size"] = 16
    with pytest.raises(UserError, match="full.image_size"):
        build.settings(p)
    p["full"].update(image_size=32, imagenet={"train": None, "val": None})
    with pytest.raises(UserError, match="full.imagenet.train: is null"):
        build.build_raw(p, [{"wnid": "n1", "name": "a"}], tmp_path)
    p["full"]["imagenet"]["train"] = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match="not found"):
        build.build_raw(p, [{"wnid": "n1", "name": "a"}], tmp_path)
    with pytest.raises(UserError, match="wnid"):
        build.build_raw(p, [{"wnid": "n1"}, {"name": "b"}], tmp_path)
