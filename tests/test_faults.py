"""Real process kills: SIGKILL `dvc repro` (and the stage it runs) mid-way through shard writing,
classifier training and generator training in a temporary copy of the project (tiny profile); the
next `dvc repro` completes, writes the same bytes as an uninterrupted run, and dvc.lock never
records a partial output.

The kill point is observed, not timed: the test polls for the stage's partial shard directory or
its checkpoint file and kills as soon as it appears. Stages under test run with `dvc repro -s`, so
the slow `embed` stage (unused by them) is never built.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
import yaml

from selectbench.evaluation.audit import FLAG_COLUMNS
from tests.project import DVC, ROOT, make_project, project_env
from tests.tiny import tiny_params

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="needs Debian data")]

TRAIN_STEPS, GEN_STEPS = 100, 30  # 30: the kill lands well before the last checkpoint, even on a loaded machine


def _params() -> dict:
    p = tiny_params(ROOT / "params.yaml", shifts=("in", "sd_txt2img"))
    p["shifts"]["sd_txt2img"].update(per_class=40, batch_size=50)  # 400 images in 4 shards of 100
    p["shifts"]["in"]["per_class"] = 500            # 5,000 samples: shard writing lasts about a second
    p["curation"]["images"] = None                  # all 5,000, not the matched budget
    p["shard"]["samples_per_shard"] = 100
    p["train"].update(steps=TRAIN_STEPS, ckpt_every=10)
    p["replicates"] = ["r1"]
    p["generator"].update(steps=GEN_STEPS, ckpt_every=3)
    return p


def _env(d: Path) -> dict:
    return {**os.environ, **project_env(d)}


def _dvc(d: Path, *args: str) -> str:
    r = subprocess.run([DVC, *args], cwd=d, env=_env(d), capture_output=True, text=True)
    assert r.returncode == 0, f"dvc {' '.join(args)}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def _kill_when(d: Path, args: list[str], ready, timeout: float = 120.0) -> None:
    """Start `dvc <args>` in its own process group, SIGKILL the whole group once ready() holds."""
    log = d / "killed-run.log"
    with open(log, "w") as out:
        p = subprocess.Popen([DVC, *args], cwd=d, env=_env(d), stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if p.poll() is not None:
                pytest.fail(f"dvc {' '.join(args)} ended (exit {p.returncode}) before the kill point:\n"
                            + log.read_text()[-3000:])
            if time.monotonic() > deadline:
                pytest.fail(f"no kill point within {timeout:.0f}s:\n" + log.read_text()[-3000:])
            time.sleep(0.005)
    finally:
        try:
            procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for proc in procs:  # any child that left the group
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        p.wait()
        _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, alive
    assert p.returncode == -signal.SIGKILL


def _lock(d: Path) -> dict:
    f = d / "dvc.lock"
    return yaml.safe_load(f.read_text())["stages"] if f.exists() else {}


def _tracked(d: Path) -> list[str]:
    """Every file path dvc.lock records as an output, directories expanded from the cache."""
    paths = []
    for entry in _lock(d).values():
        for out in entry.get("outs", []):
            md5 = out.get("md5", "")
            manifest = d / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
            if md5.endswith(".dir") and manifest.exists():
                paths += [f"{out['path']}/{f['relpath']}" for f in json.loads(manifest.read_text())]
            elif md5.endswith(".dir"):  # cache: false directory: what its hash was taken over
                paths += [p.relative_to(d).as_posix() for p in (d / out["path"]).rglob("*") if p.is_file()]
            else:
                paths.append(out["path"])
    return paths


def _assert_nothing_partial_tracked(d: Path) -> None:
    bad = [p for p in _tracked(d) if re.search(r"\.partial(/|$)|\.tmp(/|$)|/\.tmp-", p)]
    assert not bad, bad


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _out_md5(d: Path, stage: str, path: str) -> str:
    return next(o["md5"] for o in _lock(d)[stage]["outs"] if o["path"] == path)


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    d = make_project(tmp_path_factory.mktemp("faults"), _params())
    _dvc(d, "repro", "-q", "train_embedder")  # download, pool, train_embedder
    # curate@in (balanced) reads only data/raw: run it directly rather than through embed (30 s).
    r = subprocess.run([sys.executable, "-m", "stages.curate", "in"], cwd=d, env=_env(d), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    # shard@in depends on the audit's flags for `in`; the audit itself needs every evaluation set
    # (embed, corrupt, tasks: a minute), which these kills do not exercise: no item is flagged.
    (d / "data/audit").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({c: [] for c in FLAG_COLUMNS}).astype(FLAG_COLUMNS).to_parquet(d / "data/audit/in.parquet")
    return d


def test_kill_while_writing_shards(proj):
    d = proj
    partial, out = d / "data/shards/in.partial", d / "data/shards/in"
    mid_way = (partial / "shard-000001.tar").exists  # shard 0 closed, shard 1 being written
    _kill_when(d, ["repro", "-s", "shard@in"], mid_way)
    assert "shard@in" not in _lock(d)
    assert partial.is_dir() and not (out / "sizes.json").exists()
    _assert_nothing_partial_tracked(d)

    _dvc(d, "repro", "-s", "shard@in")
    assert not partial.exists()
    done, entry = _files(out), _lock(d)["shard@in"]
    assert len([f for f in done if f.endswith(".tar")]) == 50
    _assert_nothing_partial_tracked(d)

    # A forced rerun killed mid-way leaves the previous complete entry in dvc.lock untouched, and
    # the next `dvc repro` restores that output from the cache.
    _kill_when(d, ["repro", "-s", "-f", "shard@in"], mid_way)
    assert _lock(d)["shard@in"] == entry and not (out / "sizes.json").exists()
    _dvc(d, "repro", "-s", "shard@in")
    assert _files(out) == done and _lock(d)["shard@in"] == entry
    # An uninterrupted run that really executes: the same bytes as the run after the kill.
    _dvc(d, "repro", "-s", "-f", "shard@in")
    assert _files(out) == done and _lock(d)["shard@in"] == entry
    assert not partial.exists()


def test_kill_during_training_resumes_from_the_checkpoint(proj):
    d = proj
    if "shard@in" not in _lock(d):
        _dvc(d, "repro", "-s", "shard@in")
    ckpt = d / "checkpoints/in/r1/last.pt"
    _kill_when(d, ["repro", "-s", "train@in-r1"], ckpt.exists)
    assert "train@in-r1" not in _lock(d)
    assert not (d / "models/in/r1/model.safetensors").exists()
    _assert_nothing_partial_tracked(d)

    log = _dvc(d, "repro", "-s", "train@in-r1")
    m = re.search(r"resuming from step (\d+)", log)
    assert m and 0 < int(m[1]) < TRAIN_STEPS, log[-2000:]
    assert not ckpt.exists()  # a finished run keeps no resume point
    resumed, md5 = _files(d / "models/in/r1"), _out_md5(d, "train@in-r1", "models/in/r1")
    _assert_nothing_partial_tracked(d)

    log = _dvc(d, "repro", "-s", "-f", "train@in-r1")  # uninterrupted, from scratch
    assert "resuming" not in log
    assert _files(d / "models/in/r1") == resumed and _out_md5(d, "train@in-r1", "models/in/r1") == md5


def test_kill_during_generator_training_resumes_from_the_checkpoint(proj):
    d = proj
    _dvc(d, "repro", "-q", "-s", "embed")  # the generator's image-variation condition: pool image embeddings
    ck = d / "checkpoints/generator"

    def mid_way():
        try:  # written atomically, so a file that exists is complete
            return int(torch.load(ck / "last.pt", weights_only=True)["step"]) < GEN_STEPS
        except FileNotFoundError:
            return False

    _kill_when(d, ["repro", "-s", "train_generator"], mid_way)
    assert "train_generator" not in _lock(d)
    assert not (d / "models/generator/unet").exists()
    _assert_nothing_partial_tracked(d)

    log = _dvc(d, "repro", "-s", "train_generator")
    m = re.search(r"generator: resuming from step (\d+)", log)
    assert m and 0 < int(m[1]) < GEN_STEPS, log[-2000:]
    assert not any(ck.iterdir())
    resumed, md5 = _files(d / "models/generator"), _out_md5(d, "train_generator", "models/generator")
    _assert_nothing_partial_tracked(d)

    log = _dvc(d, "repro", "-s", "-f", "train_generator")
    assert "resuming" not in log
    assert _files(d / "models/generator") == resumed
    assert _out_md5(d, "train_generator", "models/generator") == md5


def _set_params(d: Path, edit) -> None:
    p = yaml.safe_load((d / "params.yaml").read_text())
    edit(p)
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def test_generation_on_two_ranks_resumes_after_a_killed_rank_and_matches_one(proj):
    """curate@sd_txt2img on 2 ranks (torchrun, gloo) with rank 1 SIGKILLed after its first finished
    shard: the stage fails with one line and dvc.lock records nothing; the next repro resumes from
    the finished shards, and its bytes are those of an uninterrupted one-process run."""
    d = proj
    if "train_generator" not in _lock(d):
        _dvc(d, "repro", "-q", "-s", "embed")
        _dvc(d, "repro", "-q", "-s", "train_generator")
    stage, out = "curate@sd_txt2img", d / "data/curated/sd_txt2img"
    _set_params(d, lambda p: p["curation"].update(nproc=2))
    r = subprocess.run([DVC, "repro", "-s", stage], cwd=d, env={**_env(d), "SELECT_FAULT_KILL_RANK": "1"},
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "a rank failed under torchrun" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert stage not in _lock(d) and not out.exists()
    _assert_nothing_partial_tracked(d)
    assert (d / "data/tmp/generate/sd_txt2img/gen-000001.tar").exists()  # rank 1's first shard

    log = _dvc(d, "repro", "-s", stage)
    m = re.search(r"resuming, (\d+) of 4 shards already written", log)
    assert m and 1 <= int(m[1]) < 4, log[-2000:]
    assert "on 2 ranks" in log
    resumed, entry = _files(out), _lock(d)[stage]
    assert sorted(f for f in resumed if f.endswith(".tar")) == [f"generated/gen-{s:06d}.tar" for s in range(4)]
    _set_params(d, lambda p: p["curation"].update(nproc=1))
    log = _dvc(d, "repro", "-s", "-f", stage)  # uninterrupted, one process
    assert "resuming" not in log and "ranks" not in log
    assert _files(out) == resumed
    assert _out_md5(d, stage, "data/curated/sd_txt2img") == next(o["md5"] for o in entry["outs"]
                                                                  if o["path"] == "data/curated/sd_txt2img")
