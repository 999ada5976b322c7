"""VTAB-1k readers on tiny fixtures written in each dataset's published layout."""
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from selectbench.core.errors import UserError
from selectbench.full import vtab, vtab_io
from selectbench.full.decode import Source


def _img(path: Path, value: int, size=(12, 10), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[1], size[0], 3), value % 256, dtype=np.uint8)
    a[0, 0] = (value * 7) % 256
    Image.fromarray(a).save(path, format=fmt)


def _labels_of(src) -> list[int]:
    return src.meta()["label"].tolist()


def _load_all(src) -> list:
    return [img for _, img in src.load(range(len(src)))]


# --- fixtures, one per layout -----------------------------------------------------------------


def make_caltech(root: Path, n=(33, 35)) -> None:
    base = root / "caltech101" / "101_ObjectCategories"
    for c, k in zip(("accordion", "airplanes"), n):
        for i in range(k):
            _img(base / c / f"image_{i + 1:04d}.jpg", 10 * i, fmt="JPEG")
    for i in range(3):
        _img(base / "BACKGROUND_Google" / f"image_{i + 1:04d}.jpg", i, fmt="JPEG")


def make_cifar(root: Path) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    names = [f"class{i}".encode() for i in range(100)]
    with open(base / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20}, f)
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 4)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[0, :1024] = 255  # red plane of image 0
        data[0, 1024:] = 0
        with open(base / split, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": list(range(n)), b"coarse_labels": [0] * n,
                         b"filenames": [b"f.png"] * n, b"batch_label": b"x"}, f)


def make_dtd(root: Path) -> None:
    base = root / "dtd"
    lines = {"train1.txt": [], "val1.txt": [], "test1.txt": []}
    for c in ("banded", "zigzagged"):
        for i in range(6):
            rel = f"{c}/{c}_{i:04d}.jpg"
            _img(base / "images" / rel, i, fmt="JPEG")
            lines[("train1.txt", "train1.txt", "val1.txt", "val1.txt", "test1.txt", "test1.txt")[i]].append(rel)
    (base / "labels").mkdir(parents=True)
    for k, v in lines.items():
        (base / "labels" / k).write_text("\n".join(v) + "\n")
    (base / "labels" / "train2.txt").write_text("banded/banded_0000.jpg\n")


def make_flowers(root: Path) -> None:
    base = root / "flowers-102"
    for n in range(1, 11):
        _img(base / "jpg" / f"image_{n:05d}.jpg", n, fmt="JPEG")
    labels = np.array([[1, 1, 2, 2, 3, 3, 1, 2, 3, 3]], dtype=np.uint8)
    savemat(base / "imagelabels.mat", {"labels": labels})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 3, 5]], dtype=np.uint16),
                                 "valid": np.array([[2, 4]], dtype=np.uint16),
                                 "tstid": np.array([[6, 7, 8, 9, 10]], dtype=np.uint16)})


def make_pets(root: Path) -> None:
    base = root / "oxford-iiit-pet"
    trainval, test = ["#Image CLASS-ID SPECIES BREED ID"], []
    for cid, breed, species in ((1, "Abyssinian", 1), (2, "american_bulldog", 2), (3, "Bengal", 1)):
        for i in range(1, 5):
            _img(base / "images" / f"{breed}_{i}.jpg", cid * 10 + i, fmt="JPEG")
            (trainval if i <= 2 else test).append(f"{breed}_{i} {cid} {species} {cid}")
    (base / "annotations").mkdir(parents=True)
    (base / "annotations" / "trainval.txt").write_text("\n".join(trainval) + "\n")
    (base / "annotations" / "test.txt").write_text("\n".join(test) + "\n")


def make_svhn(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for split, y in (("train", [1, 10, 5, 10]), ("test", [3, 10])):
        x = rng.integers(0, 256, (32, 32, 3, len(y)), dtype=np.uint8)
        x[:, :, :, 0] = 7
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": np.array(y, dtype=np.uint8)[:, None]})


def make_sun(root: Path) -> None:
    base = root / "SUN397"
    classes = ["/a/abbey", "/b/bakery/shop", "/c/canal/natural"]
    (base / "ClassName.txt").parent.mkdir(parents=True)
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    train, test = [], []
    for ci, c in enumerate(classes):
        for i in range(4):
            rel = f"{c}/sun_{ci}{i}.jpg"
            _img(base / rel.lstrip("/"), ci * 10 + i, fmt="JPEG")
            (train if i < 3 else test).append(rel)
    (base / "Partitions").mkdir()
    (base / "Partitions" / "Training_01.txt").write_text("\n".join(train) + "\n")
    (base / "Partitions" / "Testing_01.txt").write_text("\n".join(test) + "\n")


def make_pcam(root: Path) -> None:
    for split, n in (("train", 3), ("test", 2)):
        for lab in (0, 1):
            for i in range(n):
                _img(root / split / str(lab) / f"{split}_{lab}_{i}.png", 30 * lab + i)


def make_folder_tree(root: Path, top: str, classes: dict[str, int]) -> None:
    for c, n in classes.items():
        for i in range(n):
            _img(root / top / c / f"{c}_{i + 1}.jpg", i, fmt="JPEG")


def make_retino(root: Path) -> None:
    train = [("10_left", 0), ("10_right", 2), ("13_left", 4), ("13_right", 1)]
    test = [("1_left", 3, "Private"), ("1_right", 0, "Public")]
    for name, lv in train:
        _img(root / "train" / f"{name}.jpeg", lv, fmt="JPEG")
    for name, lv, _ in test:
        _img(root / "test" / f"{name}.jpeg", lv, fmt="JPEG")
    (root / "trainLabels.csv").write_text("image,level\n" + "".join(f"{n},{lv}\n" for n, lv in train))
    (root / "retinopathy_solution.csv").write_text(
        "image,level,Usage\n" + "".join(f"{n},{lv},{u}\n" for n, lv, u in test))


MAKERS = {
    "caltech101": make_caltech,
    "cifar100": make_cifar,
    "dtd": make_dtd,
    "flowers102": make_flowers,
    "pets": make_pets,
    "svhn": make_svhn,
    "sun397": make_sun,
    "pcam": make_pcam,
    "eurosat": lambda r: make_folder_tree(r, "2750", {"AnnualCrop": 10, "Forest": 5, "River": 6}),
    "resisc45": lambda r: make_folder_tree(r, "NWPU-RESISC45", {"airplane": 5, "beach": 5}),
    "retinopathy": make_retino,
}

# (train size, test size, number of classes) of each fixture
EXPECTED = {
    "caltech101": (60, 8, 2),
    "cifar100": (6, 4, 100),
    "dtd": (8, 4, 2),
    "flowers102": (5, 5, 3),
    "pets": (6, 6, 3),
    "svhn": (4, 2, 10),
    "sun397": (9, 3, 3),
    "pcam": (6, 4, 2),
    "eurosat": (17, 4, 3),
    "resisc45": (8, 2, 2),
    "retinopathy": (4, 2, 5),
}


def test_eleven_readers_cover_natural_and_specialized():
    assert set(vtab.READERS) == set(MAKERS) == set(vtab_io.LAYOUTS)
    assert len(vtab.READERS) == 11


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_reader_counts_splits_and_decoding(tmp_path, name):
    MAKERS[name](tmp_path)
    s = vtab.open_task(name, tmp_path, seed=0)
    assert isinstance(s.train, Source) and isinstance(s.test, Source)
    n_train, n_test, n_classes = EXPECTED[name]
    assert (len(s.train), len(s.test), len(s.classes)) == (n_train, n_test, n_classes)
    for src in (s.train, s.test):
        m = src.meta()
        assert "label" in m.columns and m["label"].dtype == np.int64
        assert m["label"].between(0, n_classes - 1).all()
        imgs = _load_all(src)
        assert all(isinstance(i, Image.Image) for i in imgs)
    if "path" in s.train.meta().columns:
        assert not set(s.train.meta()["path"]) & set(s.test.meta()["path"])
    assert not s.train.errors and not s.test.errors


def test_caltech_drops_background_and_takes_per_class_train(tmp_path):
    make_caltech(tmp_path)
    s = vtab.caltech101(tmp_path, seed=0, train_per_class=30)
    assert s.classes == ["accordion", "airplanes"]
    assert np.bincount(_labels_of(s.train)).tolist() == [30, 30]
    assert np.bincount(_labels_of(s.test)).tolist() == [3, 5]
    again = vtab.caltech101(tmp_path, seed=0)
    other = vtab.caltech101(tmp_path, seed=1)
    assert again.test.meta()["path"].tolist() == s.test.meta()["path"].tolist()
    assert other.test.meta()["path"].tolist() != s.test.meta()["path"].tolist()


def test_cifar_pixels_labels_and_names(tmp_path):
    make_cifar(tmp_path)
    s = vtab.cifar100(tmp_path)
    assert s.classes[:2] == ["class0", "class1"] and len(s.classes) == 100
    assert _labels_of(s.train) == [0, 1, 2, 3, 4, 5]
    first = np.asarray(next(iter(s.train.load([0])))[1])
    assert first.shape == (32, 32, 3) and (first[..., 0] == 255).all() and (first[..., 1:] == 0).all()


def test_dtd_train_is_train_plus_val(tmp_path):
    make_dtd(tmp_path)
    s = vtab.dtd(tmp_path / "dtd")  # the dataset folder itself works as well as its parent
    assert s.classes == ["banded", "zigzagged"]
    assert _labels_of(s.train) == [0, 0, 1, 1, 0, 0, 1, 1]  # train1 then val1
    assert s.test.meta()["path"].tolist() == ["images/banded/banded_0004.jpg", "images/banded/banded_0005.jpg",
                                              "images/zigzagged/zigzagged_0004.jpg", "images/zigzagged/zigzagged_0005.jpg"]


def test_flowers_mat_ids_are_one_based(tmp_path):
    make_flowers(tmp_path)
    s = vtab.flowers102(tmp_path)
    assert s.train.meta()["path"].tolist() == [f"jpg/image_{n:05d}.jpg" for n in (1, 3, 5, 2, 4)]
    assert _labels_of(s.train) == [0, 1, 2, 0, 1]
    assert _labels_of(s.test) == [2, 0, 1, 2, 2]


def test_pets_classes_from_annotation_names(tmp_path):
    make_pets(tmp_path)
    s = vtab.pets(tmp_path)
    assert s.classes == ["Abyssinian", "american_bulldog", "Bengal"]
    assert _labels_of(s.test) == [0, 0, 1, 1, 2, 2]


def test_svhn_label_ten_is_digit_zero(tmp_path):
    make_svhn(tmp_path)
    s = vtab.svhn(tmp_path)
    assert _labels_of(s.train) == [1, 0, 5, 0] and _labels_of(s.test) == [3, 0]
    assert (np.asarray(next(iter(s.train.load([0])))[1]) == 7).all()


def test_sun397_partition_and_nested_classes(tmp_path):
    make_sun(tmp_path)
    s = vtab.sun397(tmp_path)
    assert s.classes == ["/a/abbey", "/b/bakery/shop", "/c/canal/natural"]
    assert _labels_of(s.test) == [0, 1, 2]
    assert s.test.meta()["path"].iloc[1] == "b/bakery/shop/sun_13.jpg"


def test_folder_trees_split_stratified_and_seeded(tmp_path):
    make_folder_tree(tmp_path, "2750", {"AnnualCrop": 10, "Forest": 5, "River": 6})
    s = vtab.eurosat(tmp_path, seed=3)
    assert s.classes == ["AnnualCrop", "Forest", "River"]
    assert np.bincount(_labels_of(s.test)).tolist() == [2, 1, 1]
    assert set(s.train.meta()["sample_id"]).isdisjoint(s.test.meta()["sample_id"])
    again = vtab.eurosat(tmp_path, seed=3)
    assert again.test.meta()["sample_id"].tolist() == s.test.meta()["sample_id"].tolist()
    # SubsetSource.load hands back the subset's own row numbers
    rows = [r for r, _ in s.test.load([3, 0])]
    assert rows == [3, 0]


def test_retinopathy_levels_from_csv(tmp_path):
    make_retino(tmp_path)
    s = vtab.retinopathy(tmp_path)
    assert _labels_of(s.train) == [0, 2, 4, 1] and _labels_of(s.test) == [3, 0]
    assert s.classes[0] == "no DR"


def test_undecodable_file_is_counted_not_raised(tmp_path):
    make_pets(tmp_path)
    (tmp_path / "oxford-iiit-pet/images/Bengal_4.jpg").write_bytes(b"not a jpeg")
    s = vtab.pets(tmp_path)
    imgs = _load_all(s.test)
    assert imgs[-1] is None and s.test.errors["unreadable"] == 1


def _error(fn) -> str:
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("vtab "), msg
    return msg


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_missing_root_is_one_line(tmp_path, name):
    msg = _error(lambda: vtab.open_task(name, tmp_path / "nope"))
    assert "not found" in msg and "\n" not in msg


@pytest.mark.parametrize("name, make, breakage, words", [
    ("dtd", make_dtd, lambda r: (r / "dtd/images/banded/banded_0001.jpg").unlink(), "missing"),
    ("dtd", make_dtd, lambda r: (r / "dtd/labels/test1.txt").write_text("striped/x.jpg\n"), "class folder"),
    ("dtd", make_dtd, lambda r: (r / "dtd/labels/val1.txt").unlink(), "val1.txt"),
    ("caltech101", make_caltech, lambda r: (r / "caltech101/101_ObjectCategories/empty").mkdir(), "no images"),
    ("caltech101", lambda r: make_caltech(r, n=(33, 20)), lambda r: None, "more than 30"),
    ("cifar100", make_cifar, lambda r: (r / "cifar-100-python/test").write_bytes(b"garbage"), "CIFAR pickle"),
    ("cifar100", make_cifar, lambda r: (r / "cifar-100-python/meta").unlink(), "meta"),
    ("flowers102", make_flowers, lambda r: (r / "flowers-102/setid.mat").write_bytes(b"junk"), ".mat"),
    ("flowers102", make_flowers, lambda r: (r / "flowers-102/jpg/image_00007.jpg").unlink(), "missing"),
    ("pets", make_pets, lambda r: (r / "oxford-iiit-pet/annotations/test.txt").write_text("Bengal_3 two 1 1\n"),
     "class 1..37"),
    ("pets", make_pets, lambda r: (r / "oxford-iiit-pet/annotations/test.txt").write_text("Persian_3 3 1 3\n"),
     "both"),
    ("svhn", make_svhn, lambda r: savemat(r / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                                   "y": np.array([[0], [3]], np.uint8)}), "1..10"),
    ("sun397", make_sun, lambda r: (r / "SUN397/Partitions/Testing_01.txt").write_text("/z/zoo/sun_1.jpg\n"),
     "ClassName.txt"),
    ("pcam", make_pcam, lambda r: (r / "test/2").mkdir(), "must be 0"),
    ("pcam", make_pcam, lambda r: (r / "train/0/train_0_0.png").rename(r / "train/strays.png"), None),
    ("resisc45", lambda r: make_folder_tree(r, "NWPU-RESISC45", {}), lambda r: (r / "NWPU-RESISC45").mkdir(),
     "no class folders"),
    ("retinopathy", make_retino, lambda r: (r / "trainLabels.csv").write_text("image,level\n10_left,7\n"), "0..4"),
    ("retinopathy", make_retino, lambda r: (r / "retinopathy_solution.csv").write_text("id,grade\n"), "header"),
])
def test_odd_layouts_are_one_line_errors(tmp_path, name, make, breakage, words):
    make(tmp_path)
    breakage(tmp_path)
    if words is None:  # a stray file beside the class folders is ignored, as torchvision does
        assert len(vtab.open_task(name, tmp_path).train) == 5
        return
    msg = _error(lambda: vtab.open_task(name, tmp_path))
    assert words in msg and "\n" not in msg, msg


def test_unknown_task_name():
    with pytest.raises(UserError, match="known: caltech101"):
        vtab.open_task("imagenet", "/tmp")


def test_to_task_arrays_grey_size_and_caps(tmp_path):
    make_folder_tree(tmp_path, "2750", {"AnnualCrop": 10, "Forest": 5, "River": 6})
    s = vtab.eurosat(tmp_path, seed=0)
    arrays, info = vtab.to_task_arrays(s, 28, train_max=6, test_max=None, seed=0)
    assert arrays["train_x"].shape == (6, 28, 28) and arrays["train_x"].dtype == np.uint8
    assert arrays["test_x"].shape == (4, 28, 28) and len(arrays["test_y"]) == 4
    assert info["decode_errors"] == {"train": {}, "test": {}}
    again, _ = vtab.to_task_arrays(s, 28, train_max=6, test_max=None, seed=0)
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)


def test_to_task_arrays_rgb_mode_at_another_size(tmp_path):
    make_cifar(tmp_path)
    s = vtab.cifar100(tmp_path)
    grey, _ = vtab.to_task_arrays(s, 20, train_max=None, test_max=2, seed=0)
    rgb, info = vtab.to_task_arrays(s, 20, mode="RGB", train_max=None, test_max=2, seed=0)
    assert grey["train_x"].shape == (6, 20, 20) and rgb["train_x"].shape == (6, 20, 20, 3)
    assert rgb["test_x"].shape == (2, 20, 20, 3) and rgb["train_x"].dtype == np.uint8
    assert all(np.array_equal(grey[k], rgb[k]) for k in ("train_y", "test_y"))
    assert (rgb["train_x"][0] == (255, 0, 0)).all()  # image 0 is pure red: colour is kept
    assert info["decode_errors"] == {"train": {}, "test": {}}
