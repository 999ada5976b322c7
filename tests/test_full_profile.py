"""The full profile end to end: `dvc repro` over ImageNet / LAION / OpenImages / ImageNet-V2 /
-R / -Sketch / VTAB fixtures in their real layouts, a pretrained (tiny) CLIP and Stable Diffusion.

Same stages and code as the embedded default; the pixels stay in the adapters' files."""
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml

from selectbench.core.genshards import GeneratedImages
from tests.full_world import write_classes, write_world
from tests.project import ALWAYS, ROOT, UP_TO_DATE, inside, make_project
from tests.tiny import tiny_params

pytestmark = pytest.mark.integration
SHIFTS = ("in", "la_img2img", "la_txt2img", "oi", "hkm", "sd_txt2img", "sd_img2img")


def _merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def project(world, tmp_path_factory):
    from dvc.repo import Repo

    p = _merge(tiny_params(ROOT / "params.yaml", shifts=SHIFTS), world.overrides)
    p["shifts"]["hkm"].update(n=20, levels=[4, 2], prefilter_clusters=4)
    p["evaluate"]["ssl_k"] = [5, 10]  # 4 classes: a 5-shot bank holds 20, and k must stay below it
    p["replicates"] = ["r1"]  # also runs the report's one-replicate path (no interval, verdicts inconclusive)
    d = tmp_path_factory.mktemp("full")
    make_project(d, p)
    write_classes(d / "data/meta/classes.yaml")
    with inside(d):
        ran = Repo(".").reproduce()
    return d, {s.addressing for s in ran}


def test_every_stage_runs_on_the_real_formats(project):
    d, ran = project
    stages = {"code", "check_params", "manifests", "download", "pool", "train_embedder", "embed", "train_generator", "corrupt",
              "train_judge_encoder", "train_judge_classifier",
              "tasks", "audit", "report"}
    stages |= {f"{s}@{k}" for s in ("curate", "shard", "describe") for k in SHIFTS}
    stages |= {f"{s}@{k}-r1" for s in ("train", "evaluate") for k in SHIFTS}
    stages |= {"transfer_baseline@r1"}
    assert ran == stages


def test_pixels_stay_in_the_source_files(project, world):
    d, _ = project
    with np.load(d / "data/raw/train.npz") as z:
        assert sorted(z.files) == ["labels", "part"]
        assert np.bincount(z["labels"]).tolist() == world.expect["imagenet_train"]["per_class"]
    assert json.loads((d / "data/raw/train.images.json").read_text())["mode"] == "RGB"
    assert not (d / "data/pool/images.npy").exists()
    meta = pd.read_parquet(d / "data/pool/meta.parquet")
    assert meta["origin"].value_counts().to_dict() == {"laion": world.laion_rows, "openimages": world.oi_images}


def test_shifts_point_into_the_right_sources(project, world):
    d, _ = project
    meta = pd.read_parquet(d / "data/pool/meta.parquet")
    oi = pd.read_parquet(d / "data/curated/oi/index.parquet")
    assert len(oi) == world.oi_images and set(meta["origin"].to_numpy()[oi["row"]]) == {"openimages"}
    assert sorted(oi["label"].unique()) == [0, 1, 2]  # class 3 has no OpenImages label
    for shift in ("la_img2img", "hkm"):  # web search never returns the OpenImages images
        idx = pd.read_parquet(d / f"data/curated/{shift}/index.parquet")
        assert len(idx) and set(meta["origin"].to_numpy()[idx["row"]]) == {"laion"}
    ids = pd.read_parquet(d / "data/curated/in/index.parquet")["sample_id"]
    assert ids.str.startswith("imagenet_train:").all()
    assert pd.read_parquet(d / "data/embeddings/test_img.ids.parquet")["sample_id"][0] == "imagenet_test:0"
    stats = json.loads((d / "data/curated/in/stats.json").read_text())
    assert stats["images"] == 4 * 8 and stats["label_precision"] == 1.0
    assert "label_precision" not in json.loads((d / "data/curated/la_img2img/stats.json").read_text())


def test_models_are_rgb_and_every_metric_is_computed(project):
    d, _ = project
    for shift in ("in", "oi", "sd_txt2img", "sd_img2img"):
        assert json.loads((d / f"data/shards/{shift}/summary.json").read_text())["channels"] == 3
        args = yaml.safe_load((d / f"models/{shift}/r1/args.yaml").read_text())
        assert args["train"]["in_chans"] == 3
        m = json.loads((d / f"reports/metrics/{shift}/r1.json").read_text())
        assert m["status"] == "ok" and 0 <= m["top1"] <= 1
        assert set(m["natural"]["per_set"]) == {"imagenet_v2", "imagenet_r", "imagenet_sketch"}
        assert m["natural"]["images"] == 12 + 4 + 12
        # -R is scored over its published classes that the run has (goldfish, great white shark)
        assert m["natural"]["scored_classes"] == {"imagenet_r": [1, 2]}
        assert set(m["transfer"]["tasks"]) == {"vtab_eurosat"}
        assert np.isfinite(m["corruption"]["mean_top1"])
    gen = np.asarray(GeneratedImages(d / "data/curated/sd_img2img/generated"))
    assert gen.shape == (4 * 3, 32, 32, 3) and gen.dtype == np.uint8


def test_broken_files_are_left_out_before_embedding_and_counted(project, world):
    d, _ = project
    raw = json.loads((d / "data/raw/summary.json").read_text())
    assert raw["undecodable"] == {"train": world.expect["imagenet_train"]["undecodable"], "test": {}}
    assert raw["train"] == sum(world.expect["imagenet_train"]["per_class"]) == len(np.load(d / "data/embeddings/train_img.npy"))
    pool = json.loads((d / "data/pool/stats.json").read_text())
    lx = world.expect["laion"]
    assert pool["skipped"] == {"laion": {k: lx[k] for k in ("download_failed", "tar_missing", "truncated", "zero_byte")},
                               "openimages": world.expect["openimages"]}
    assert pool["laion"]["key_from"] == "img2dataset rule" and pool["laion"]["kept"] == lx["kept"] == 43
    assert pool["natural"]["undecodable"] == {"imagenet_r": {}, "imagenet_sketch": {}, **world.expect["natural"]}
    tasks = json.loads((d / "data/tasks/summary.json").read_text())["vtab_eurosat"]
    errors = Counter()
    for split in tasks["decode_errors"].values():
        errors.update(split)
    assert errors == world.expect["vtab_eurosat"]
    # every kept row has an image: nothing is left out when the LAION shifts are written
    for shift in ("la_img2img", "la_txt2img", "hkm", "oi", "in"):
        assert "undecodable" not in json.loads((d / f"data/shards/{shift}/summary.json").read_text()), shift
    keys = pd.read_parquet(d / "data/pool/meta.parquet")["sample_id"]
    assert keys.str.fullmatch(r"laion:\d{6}|oi:.*").all()  # img2dataset keys: 5-digit shard + 1-digit row


def test_cmyk_and_misnamed_images_decode_to_their_colours(project, world):
    from selectbench.core.images import open_images

    d, _ = project
    paths = pd.read_parquet(d / "data/raw/train.paths.parquet")["path"].tolist()
    with inside(d):
        images = open_images("train")
        for path, rgb in world.expect["imagenet_train"]["solid"].items():
            img, ok = images.take([paths.index(path)])
            assert ok.all() and np.abs(img[0].reshape(-1, 3).mean(0) - rgb).max() < 6, path


def test_second_run_is_a_noop(project):
    from dvc.repo import Repo

    d, _ = project
    with inside(d):
        repo = Repo(".")
        assert {s.addressing for s in repo.reproduce()} == ALWAYS  # the manifests come out byte-identical
        assert repo.status() == UP_TO_DATE


def test_audit_and_new_strategies_run_on_the_real_formats(project):
    """The contamination audit over ImageNet val, the natural sets and VTAB; then CLIP-score
    filtering, SemDeDup and confident-learning cleaning over LAION (curate only). Runs after the
    no-op test: it adds shifts to params.yaml."""
    from dvc.repo import Repo

    d, ran = project
    audit = json.loads((d / "data/audit/summary.json").read_text())
    assert set(audit["sets"]) == {"test", "corrupted", "natural", "task:vtab_eurosat"}
    for shift in SHIFTS:
        flagged = pd.read_parquet(d / f"data/audit/{shift}.parquet")
        v = audit["shifts"][shift]
        assert v["flagged_items"] == flagged["position"].nunique()
        assert json.loads((d / f"data/shards/{shift}/summary.json").read_text())["contaminated_removed"] == v["flagged_items"]
    assert audit["shifts"]["in"]["per_set"]["test"]["exact"] == 0  # ImageNet train images are not val images
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["shifts"]["la_clip"] = {"strategy": "clip_score", "uses": "curation.seed", "fraction": 0.5, "threshold": None,
                              "per_class_cap": None}
    p["shifts"]["la_clean"] = {"strategy": "txt2img", "uses": "curation.clip_threshold", "per_class_cap": None,
                               "semdedup": {"clusters": 4, "epsilon": 0.05, "seed": 0}, "clean": {"folds": 2, "seed": 0}}
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    with inside(d):
        repo = Repo(".")
        got = {s.addressing for s in repo.reproduce("curate@la_clip")} | {s.addressing for s in repo.reproduce("curate@la_clean")}
    assert {"curate@la_clip", "curate@la_clean"} <= got
    clip = json.loads((d / "data/curated/la_clip/stats.json").read_text())
    assert clip["clip_score_kept"] == round(0.5 * clip["candidates"]) and clip["images"] > 0
    cleaned = json.loads((d / "data/curated/la_clean/stats.json").read_text())
    assert cleaned["cleaned_from"] <= cleaned["semdedup_from"] and cleaned["label_issues_removed"] >= 0
    idx = pd.read_parquet(d / "data/curated/la_clean/index.parquet")
    assert len(idx) == cleaned["images"] and (idx["source"] == "pool").all()


def test_changed_external_data_reruns_the_stages_that_read_it(world, tmp_path_factory):
    """The datasets live outside the repository; their manifests (stage `manifests`) are what DVC
    sees. An appended OpenImages CSV row or a removed LAION tar: once the manifests are written,
    `dvc status` names pool, and `dvc repro` reruns it; download (ImageNet) stays untouched."""
    import shutil

    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("ext")
    for sub in ("laion", "openimages"):
        shutil.copytree(world.root / sub, root / sub)
    p = _merge(tiny_params(ROOT / "params.yaml", shifts=SHIFTS), world.overrides)
    p["full"]["laion"]["root"] = str(root / "laion")
    p["full"]["openimages"] = {k: str(root / "openimages" / v) for k, v in (
        ("labels_csv", "labels.csv"), ("descriptions_csv", "descriptions.csv"), ("mapping_json", "mapping.json"),
        ("images_dir", "images"))}
    d = make_project(tmp_path_factory.mktemp("extproj"), p)
    write_classes(d / "data/meta/classes.yaml")
    with inside(d):
        repo = Repo(".")
        assert {s.addressing for s in repo.reproduce("pool")} == {"code", "check_params", "manifests", "download", "pool"}
        assert {s.addressing for s in repo.reproduce("pool")} == ALWAYS
        labels = root / "openimages/labels.csv"
        labels.write_text(labels.read_text() + "0000000000000004,verification,/m/aa,1\n")
        repo.reproduce("manifests", single_item=True)
        assert set(repo.status(targets=["download", "pool"])) == {"pool"}  # `dvc status` after the manifests
        assert {s.addressing for s in repo.reproduce("pool")} == {"pool"} | ALWAYS
        (root / "laion/shards/00005.tar").unlink()
        assert {s.addressing for s in repo.reproduce("pool")} == {"pool"} | ALWAYS
        stats = json.loads((d / "data/pool/stats.json").read_text())
        # shard 5 held 10 rows: its failed download stays counted as such (its parquet is still there)
        assert stats["skipped"]["laion"] == {**stats["skipped"]["laion"], "download_failed": 5,
                                             "tar_missing": world.expect["laion"]["tar_missing"] + 9}
        assert stats["laion"]["kept"] == world.laion_rows - 9
        assert repo.status(targets=["download", "pool"]) == {}
