"""Stage `tasks`: the transfer suite (emoji, clip-art, VTAB readers) and its hold-out guarantees."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from selectbench.embedded import clipart, emoji
from selectbench.embedded import natural as natural_set
from selectbench.evaluation import tasks as T
from stages.tasks import main as tasks_main
from tests.test_vtab import make_dtd

ROOT = Path(__file__).resolve().parents[1]
FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
needs_emoji = pytest.mark.skipif(not (Path(FONT).is_file() and Path(EMOJI_TEST).is_file()), reason="needs Noto emoji")


def _drawing(path: Path, seed: int) -> None:
    """A distinct random drawing on a transparent page (what Open Clip Art PNGs look like)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a = np.zeros((40, 40, 4), dtype=np.uint8)
    a[..., :3] = rng.integers(0, 200, (40, 40, 3))
    a[..., 3] = np.where(rng.random((40, 40)) < 0.5, 255, 0)
    Image.fromarray(a, "RGBA").save(path)


def _no_natural() -> dict:
    return {"clip_keys": set(), "clip_hashes": set(), "emoji_keys": set(), "images": np.zeros((0, 28, 28), np.uint8)}


@pytest.fixture
def clip_root(tmp_path):
    root = tmp_path / "png"
    for k, (cat, n) in enumerate((("animals", 12), ("food", 9), ("tools", 3), ("unsorted", 10))):
        for i in range(n):
            _drawing(root / cat / f"{cat}_{i}.png", 100 * k + i)
    _drawing(root / "animals" / "cats" / "nested.png", 99991)  # below a category: still that category
    _drawing(root / "stray.png", 99992)  # no category folder: ignored
    return root


def test_clipart_task_classes_minimum_cap_and_determinism(clip_root):
    x, y, names, info = T.clipart_task(str(clip_root), _no_natural(), 4, 8, np.random.default_rng(0))
    assert names == ["animals", "food"]  # tools (3 < 4) dropped, unsorted is not a category
    assert info["dropped_classes"] == {"tools": "3 listed"}
    assert x.dtype == np.uint8 and x.shape[1:] == (28, 28)
    assert np.bincount(y).tolist() == [8, 8]
    again = T.clipart_task(str(clip_root), _no_natural(), 4, 8, np.random.default_rng(0))[0]
    other = T.clipart_task(str(clip_root), _no_natural(), 4, 8, np.random.default_rng(1))[0]
    assert np.array_equal(x, again) and not np.array_equal(x, other)


def test_clipart_task_keeps_the_natural_set_out(clip_root):
    held = "animals/animals_0.png"
    copy_of_natural = clip_root / "food" / "copy.png"
    copy_of_natural.write_bytes((clip_root / "animals/animals_1.png").read_bytes())  # same bytes, other name
    near = clipart.load_clipart((str(clip_root), "animals/animals_2.png"))[1]
    natural = {
        "clip_keys": {held},
        "clip_hashes": {hashlib.sha1((clip_root / "animals/animals_1.png").read_bytes()).hexdigest()},
        "emoji_keys": set(),
        "images": np.clip(near.astype(int) + 2, 0, 255).astype(np.uint8)[None],  # a re-saved copy
    }
    x, y, names, info = T.clipart_task(str(clip_root), natural, 2, 100, np.random.default_rng(0))
    assert info["held_out_natural"] == 1
    assert info["skipped"]["duplicate_of_natural"] == 2  # animals_1 and its copy in food
    assert info["skipped"]["near_duplicate_of_natural"] == 1
    assert not natural_set.near_duplicates(x, natural["images"]).any()
    assert names == ["animals", "food", "tools"] and np.bincount(y).tolist() == [13 - 3, 9, 3]


@needs_emoji
def test_emoji_task_groups_without_tone_variants_or_natural(tmp_path):
    lines = ["# group: Smileys & Emotion", "# subgroup: face-smiling",
             "1F600 ; fully-qualified # 😀 E1.0 grinning face",
             "1F603 ; fully-qualified # 😃 E0.6 grinning face with big eyes",
             "1F604 ; fully-qualified # 😄 E0.6 grinning face with smiling eyes",
             "263A ; unqualified # ☺ E0.6 smiling face",
             "# group: People & Body", "# subgroup: hand-fingers-open",
             "1F44B ; fully-qualified # 👋 E0.6 waving hand",
             "1F44B 1F3FB ; fully-qualified # 👋🏻 E1.0 waving hand: light skin tone",
             "1F91A ; fully-qualified # 🤚 E3.0 raised back of hand",
             "1F590 FE0F ; fully-qualified # 🖐️ E0.7 hand with fingers splayed",
             "# group: Food & Drink", "# subgroup: food-fruit",
             "1F347 ; fully-qualified # 🍇 E0.6 grapes"]
    f = tmp_path / "emoji-test.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    natural = _no_natural() | {"emoji_keys": {"1F604"}}
    x, y, names, info = T.emoji_task(str(f), FONT, natural, 2, 10, np.random.default_rng(0))
    assert names == ["Smileys & Emotion", "People & Body"]
    assert info["dropped_classes"] == {"Food & Drink": "1 listed"}
    assert info["skin_tone_variants"] == 1 and info["held_out_natural"] == 1
    assert np.bincount(y).tolist() == [2, 3] and x.shape == (5, 28, 28)


@needs_emoji
def test_real_emoji_task_excludes_the_real_natural_set():
    natural = natural_set.natural_holdout("/usr/share/openclipart/png", FONT, EMOJI_TEST)
    assert natural["emoji_keys"]
    x, y, names, _ = T.emoji_task(EMOJI_TEST, FONT, natural, 50, 150, np.random.default_rng(0))
    assert len(names) >= 8 and np.bincount(y).max() <= 150 and np.bincount(y).min() >= 50
    assert not natural_set.near_duplicates(x, natural["images"]).any()
    renders = {emoji.render_emoji((FONT, k))[1].tobytes() for k in sorted(natural["emoji_keys"])[:10]}
    assert not renders & {im.tobytes() for im in x}


def _params(tmp_path, **transfer) -> Path:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["transfer"].update(transfer)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_stage_builds_the_contract_from_local_and_vtab_tasks(tmp_path, clip_root):
    make_dtd(tmp_path / "vtab" / "dtd")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["transfer"].update(tasks=["digits", "clipart", "vtab_dtd"], vtab_root=str(tmp_path / "vtab"),
                              min_per_class=4, max_per_class=8)
    params["pool"]["clipart"]["root"] = str(clip_root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "tasks"
    tasks_main(["--params", str(tmp_path / "params.yaml"), "--out", str(out)])
    for name in ("digits", "clipart", "vtab_dtd"):
        d = np.load(out / f"{name}.npz")
        for split in ("train", "test"):
            assert d[f"{split}_x"].dtype == np.uint8 and d[f"{split}_x"].shape[1:] == (28, 28)
            assert d[f"{split}_y"].dtype == np.int64 and len(d[f"{split}_y"]) == len(d[f"{split}_x"])
    d = np.load(out / "clipart.npz")
    assert np.bincount(d["test_y"]).tolist() == [2, 2]  # stratified: round(8 * 0.2) per class
    dtd = np.load(out / "vtab_dtd.npz")
    assert len(dtd["train_y"]) == 8 and len(dtd["test_y"]) == 4  # train1 + val1, test1
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert summary["clipart"]["class_names"] == ["animals", "food"]
    first = {f.name: f.read_bytes() for f in out.iterdir()}
    tasks_main(["--params", str(tmp_path / "params.yaml"), "--out", str(out)])
    assert {f.name: f.read_bytes() for f in out.iterdir()} == first  # deterministic bytes


def test_rgb_mode_and_another_size(tmp_path, clip_root):
    make_dtd(tmp_path / "vtab" / "dtd")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["transfer"].update(tasks=["digits", "clipart", "vtab_dtd"], vtab_root=str(tmp_path / "vtab"),
                              min_per_class=4, max_per_class=8, image_size=20)
    params["pool"]["clipart"]["root"] = str(clip_root)
    out = {}
    for mode in ("L", "RGB"):
        params["transfer"]["mode"] = mode
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        tasks_main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / mode)])
        out[mode] = {n: dict(np.load(tmp_path / mode / f"{n}.npz")) for n in ("digits", "clipart", "vtab_dtd")}
    for n in ("digits", "clipart", "vtab_dtd"):
        grey, rgb = out["L"][n], out["RGB"][n]
        for split in ("train", "test"):
            assert grey[f"{split}_x"].shape[1:] == (20, 20) and rgb[f"{split}_x"].shape[1:] == (20, 20, 3)
            np.testing.assert_array_equal(grey[f"{split}_y"], rgb[f"{split}_y"])  # the same split
    for n in ("digits", "clipart"):  # local tasks: grey replicated into the three channels
        np.testing.assert_array_equal(out["RGB"][n]["train_x"], np.repeat(out["L"][n]["train_x"][..., None], 3, axis=3))


def test_default_size_and_mode_leave_local_images_as_made():
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert T._to_task_images(x, 28, "L") is x
    assert T._to_task_images(x, 40, "RGB").shape == (3, 40, 40, 3)


def test_adding_a_task_leaves_the_others_unchanged(tmp_path):
    out1, out2 = tmp_path / "a", tmp_path / "b"
    tasks_main(["--params", str(_params(tmp_path, tasks=["digits"])), "--out", str(out1)])
    tasks_main(["--params", str(_params(tmp_path, tasks=["mnist", "digits"])), "--out", str(out2)])
    assert (out1 / "digits.npz").read_bytes() == (out2 / "digits.npz").read_bytes()


@pytest.mark.parametrize("transfer, key", [
    ({"tasks": ["digits", "imagenet"]}, "transfer.tasks"),
    ({"tasks": ["vtab_imagenet"]}, "transfer.tasks"),
    ({"tasks": ["digits", "digits"]}, "transfer.tasks"),
    ({"tasks": ["vtab_dtd"], "vtab_root": None}, "transfer.vtab_root"),
    ({"tasks": ["vtab_dtd"], "vtab_root": "/no/such/dir"}, "transfer.vtab_root"),
    ({"tasks": ["digits"], "min_per_class": 10, "max_per_class": 5}, "transfer.max_per_class"),
    ({"tasks": ["digits"], "vtab_test_max": 0}, "transfer.vtab_test_max"),
    ({"tasks": ["digits"], "image_size": 4}, "transfer.image_size"),
    ({"tasks": ["digits"], "image_size": 32.0}, "transfer.image_size"),
    ({"tasks": ["digits"], "mode": "CMYK"}, "transfer.mode"),
])
def test_param_errors_are_one_line(tmp_path, capsys, transfer, key):
    with pytest.raises(SystemExit) as e:
        tasks_main(["--params", str(_params(tmp_path, **transfer)), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {key}"), err


def test_vtab_layout_error_is_one_line(tmp_path, capsys):
    (tmp_path / "vtab" / "dtd").mkdir(parents=True)
    with pytest.raises(SystemExit):
        tasks_main(["--params", str(_params(tmp_path, tasks=["vtab_dtd"], vtab_root=str(tmp_path / "vtab"))),
                "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: vtab dtd:") and "images" in err[0]
