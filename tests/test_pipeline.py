"""Integration: the DVC pipeline on a tiny profile in a temporary git repo; what reran, and when."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tiny import tiny_params, write

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="needs Debian data")]


def _copy_project(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        built = f.startswith(("data/", "models/", "checkpoints/", "reports/", "bench/out")) and not f.startswith("data/meta/")
        if src.is_file() and not built and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def _names(stages) -> set[str]:
    return {s.addressing for s in stages}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("proj")
    _copy_project(d)
    write(tiny_params(d / "params.yaml"), d / "params.yaml")
    env = {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(d / ".site-cache"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "2"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], cwd=d, check=True)
    subprocess.run(git + ["add", "-A"], cwd=d, check=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=d, check=True)
    from dvc.repo import Repo

    cwd = os.getcwd()
    os.chdir(d)
    try:
        repo = Repo(str(d))
        first = repo.reproduce()
        yield d, repo, first
    finally:
        os.chdir(cwd)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_first_run_builds_everything(project):
    d, _, first = project
    names = _names(first)
    for shift in ("in", "la_txt2img", "sd_img2img"):
        for stage in ("curate", "shard", "train", "evaluate"):
            assert f"{stage}@{shift}" in names
    assert "report" in names
    assert (d / "reports/results/index.md").exists()
    assert (d / "reports/results/class_counts.png").stat().st_size > 1000
    m = yaml.safe_load((d / "reports/metrics/in.json").read_text())
    assert m["status"] == "ok" and 0 <= m["top1"] <= 1
    assert len(list((d / "data/shards/in").glob("*.tar"))) >= 1


def test_second_run_is_a_noop(project):
    _, repo, _ = project
    assert repo.reproduce() == []


def test_changing_one_shift_reruns_only_its_chain(project):
    d, repo, _ = project
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["shifts"]["in"]["per_class"] += 2
    write(p, d / "params.yaml")
    ran = _names(repo.reproduce())
    assert ran == {"curate@in", "shard@in", "train@in", "evaluate@in", "report"}


def test_clip_threshold_reruns_only_the_text_search_chain(project):
    d, repo, _ = project
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["curation"]["clip_threshold"] = 0.4
    write(p, d / "params.yaml")
    ran = _names(repo.reproduce())
    assert "curate@la_txt2img" in ran
    assert ran <= {"curate@la_txt2img", "shard@la_txt2img", "train@la_txt2img", "evaluate@la_txt2img", "report"}


def test_push_then_pull_in_a_fresh_clone_restores_everything(project, tmp_path):
    d, _, _ = project
    remote = tmp_path / "remote"
    dvc = [str(Path(sys.executable).parent / "dvc")]
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(dvc + ["remote", "add", "-f", "-d", "t", str(remote)], cwd=d, check=True)
    subprocess.run(dvc + ["push", "-q"], cwd=d, check=True)
    subprocess.run(git + ["add", "-A"], cwd=d, check=True)
    subprocess.run(git + ["commit", "-qm", "run"], cwd=d, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(d), str(clone)], check=True)
    subprocess.run(dvc + ["pull", "-q"], cwd=clone, check=True)
    for out in ("data/shards/in/sizes.json", "models/in/model.safetensors", "data/curated/in/index.parquet",
                "reports/results/index.md"):
        assert (clone / out).read_bytes() == (d / out).read_bytes(), out
    st = subprocess.run(dvc + ["status"], cwd=clone, capture_output=True, text=True, check=True)
    assert "up to date" in st.stdout, st.stdout
