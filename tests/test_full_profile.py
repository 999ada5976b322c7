"""The full profile end to end: `dvc repro` over ImageNet / LAION / OpenImages / ImageNet-V2 /
-R / -Sketch / VTAB fixtures in their real layouts, a pretrained (tiny) CLIP and Stable Diffusion.

Same stages and code as the embedded default; the pixels stay in the adapters' files."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.full_world import write_classes, write_world
from tests.project import ROOT, inside, make_project
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
    p["replicates"] = ["r1"]  # also runs the report's one-replicate path (no interval, verdicts inconclusive)
    d = tmp_path_factory.mktemp("full")
    make_project(d, p)
    write_classes(d / "data/meta/classes.yaml")
    with inside(d):
        ran = Repo(".").reproduce()
    return d, {s.addressing for s in ran}


def test_every_stage_runs_on_the_real_formats(project):
    d, ran = project
    stages = {"check_params", "download", "pool", "train_embedder", "embed", "train_generator", "corrupt", "tasks", "report"}
    stages |= {f"{s}@{k}" for s in ("curate", "shard", "describe") for k in SHIFTS}
    stages |= {f"{s}@{k}-r1" for s in ("train", "evaluate") for k in SHIFTS}
    assert ran == stages


def test_pixels_stay_in_the_source_files(project, world):
    d, _ = project
    with np.load(d / "data/raw/train.npz") as z:
        assert sorted(z.files) == ["labels", "part"]
        assert np.bincount(z["labels"]).tolist() == [16] * 4
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
    gen = np.load(d / "data/curated/sd_img2img/images.npy")
    assert gen.shape == (4 * 3, 32, 32, 3) and gen.dtype == np.uint8


def test_second_run_is_a_noop(project):
    from dvc.repo import Repo

    d, _ = project
    with inside(d):
        repo = Repo(".")
        assert repo.reproduce() == []
        assert repo.status() == {}
