"""The evaluate stage as several torch.distributed ranks (gloo, CPU): the metrics record and every
per-item array equal one process's, also with more ranks than batches and tasks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from selectbench.core import shards
from selectbench.core.io import write_json
from selectbench.models import training
from selectbench.models.training import PREDICT_BATCH as BATCH
from tests.test_training import CFG, make_shards

ROOT = Path(__file__).resolve().parents[1]
TRANSFER = {"tasks": ["a", "b"], "protocol": "finetune", "steps": 3, "batch_size": 8, "lr": 0.01}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A trained tiny model and evaluation inputs: 3 test batches (the last partial), 2 corrupted,
    1 natural, 2 transfer tasks."""
    d = tmp_path_factory.mktemp("proj")
    (d / "data/meta").mkdir(parents=True)
    (d / "data/meta/classes.yaml").write_text((ROOT / "data/meta/classes.yaml").read_text())
    C = 10
    cfg = {**CFG, "steps": 2, "workers": 0, "ckpt_every": 0, "in_chans": 1}
    make_shards(d / "shards", n=64, classes=C)
    urls, sizes = shards.shard_urls(d / "shards")
    model, _ = training.train(urls, sizes, np.ones(C), cfg, None)
    (d / "models/in/r1").mkdir(parents=True)
    training.save_model(d / "models/in/r1", model, {"shift": "in", "replicate": "r1", "num_classes": C, "train": cfg})

    rng = np.random.default_rng(0)

    def imgs(n):
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)

    for sub in ("raw", "corrupted", "natural", "tasks"):
        (d / "data" / sub).mkdir()
    np.savez(d / "data/raw/test.npz", images=imgs(2 * BATCH + 52), labels=rng.integers(0, C, 2 * BATCH + 52))
    n = BATCH + 76
    np.savez(d / "data/corrupted/corrupted.npz", images=imgs(n), labels=rng.integers(0, C, n),
             corruption=rng.integers(0, 3, n), severity=rng.integers(1, 6, n))
    write_json(d / "data/corrupted/summary.json", {"corruptions": ["noise", "blur", "fog"]})
    np.save(d / "data/natural/images.npy", imgs(7))
    pd.DataFrame({"label": rng.integers(0, C, 7), "set": ["imagenet_v2"] * 4 + ["imagenet_sketch"] * 3}).to_parquet(
        d / "data/natural/meta.parquet")
    for task in TRANSFER["tasks"]:
        np.savez(d / f"data/tasks/{task}.npz", train_x=imgs(40), train_y=rng.integers(0, 3, 40),
                 test_x=imgs(30), test_y=rng.integers(0, 3, 30))
    return d


def _evaluate(d: Path, nproc: int, torchrun: bool = False) -> tuple[bytes, dict]:
    """Run the stage with evaluate.nproc = nproc (it relaunches itself under torchrun), or under
    torchrun directly; (the metrics file's bytes, the item arrays)."""
    (d / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"seed": 0, "nproc": nproc}, "transfer": TRANSFER}))
    for f in (d / "reports/metrics/in/r1.json", d / "reports/items/in/r1.npz"):
        f.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELECT_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "stages.evaluate", "in", "r1"]
    if torchrun:
        cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "stages.evaluate"]
    r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cost = json.loads((d / "reports/cost/evaluate_in-r1.json").read_text())
    assert cost["world"] == nproc
    with np.load(d / "reports/items/in/r1.npz") as z:
        items = {k: z[k] for k in z.files}
    return (d / "reports/metrics/in/r1.json").read_bytes(), items


def test_ranks_give_the_single_process_outputs(project):
    ref_metrics, ref_items = _evaluate(project, 1)
    rec = json.loads(ref_metrics)
    assert rec["status"] == "ok" and set(rec["transfer"]["tasks"]) == {"a", "b"}
    assert list(ref_items) == ["top1", "p_true", "corruption", "corruption_strata", "natural", "transfer",
                               "transfer_strata"]
    assert len(ref_items["top1"]) == 2 * BATCH + 52 and len(ref_items["corruption"]) == BATCH + 76
    # 2 ranks through evaluate.nproc; 4 (more than every kind of unit: 3 test batches, 2 corrupted,
    # 1 natural, 2 tasks, so rank 3 has no work at all) under torchrun directly.
    for nproc, torchrun in ((2, False), (4, True)):
        metrics, items = _evaluate(project, nproc, torchrun)
        assert metrics == ref_metrics, nproc
        assert list(items) == list(ref_items)
        for k, v in ref_items.items():
            assert items[k].dtype == v.dtype and np.array_equal(items[k], v), (nproc, k)


@pytest.mark.parametrize("nproc", [0, 1.5, "2"])
def test_nproc_must_be_a_positive_integer(tmp_path, monkeypatch, capsys, nproc):
    from stages import evaluate

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["evaluate"]["nproc"] = nproc
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        evaluate.main(["in", "r1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: evaluate.nproc: "), err
