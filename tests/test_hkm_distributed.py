"""Hierarchical k-means split across ranks (torch.distributed, gloo) fits the tree one process fits:
identical labels at every level, centroids within float tolerance, the same balanced draw."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selectbench.curation.hkm.comm import LOCAL, shard_range

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n,world,expected", [
    (0, 2, [(0, 0), (0, 0)]),
    (1, 2, [(0, 1), (1, 1)]),
    (5, 2, [(0, 3), (3, 5)]),
    (7, 3, [(0, 3), (3, 5), (5, 7)]),
    (4, 1, [(0, 4)]),
])
def test_shard_range_covers_every_row_once(n, world, expected):
    assert [shard_range(n, r, world) for r in range(world)] == expected


def test_local_collectives_are_the_identity():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    assert LOCAL.sum(x) is x and LOCAL.any(True) and not LOCAL.any(False)
    assert LOCAL.offset(6) == (0, 6)
    np.testing.assert_array_equal(LOCAL.rows(x, np.array([4, 1])), x[[4, 1]])
    assert LOCAL.gather("a") == ["a"]


def _run(world: int, emb: Path, out: Path, extra: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
           "-m", "selectbench.curation.hkm", str(emb), "--select", "400", "--levels", "50,6", "--chunk", "128",
           "--out", str(out), "--no-progress", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("extra", [
    [],  # closest resampling, k-means++ on a subsample, random leaves
    ["--strategy", "random", "--leaf", "closest", "--init-sample", "0", "--resample-steps", "2,1"],
    ["--init", "random", "--seed", "3"],
], ids=["default", "random-resample-all-rows-seeding", "random-init"])
def test_two_ranks_fit_the_one_process_tree(tmp_path, extra):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 8)) * 4
    # An odd count, so the ranks hold blocks of different sizes and the chunks straddle them.
    x = (centres[rng.integers(0, 30, 2501)] + rng.normal(size=(2501, 8))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    _run(1, tmp_path / "x.npy", tmp_path / "w1", extra)
    _run(2, tmp_path / "x.npy", tmp_path / "w2", extra)
    one, two = np.load(tmp_path / "w1" / "tree.npz"), np.load(tmp_path / "w2" / "tree.npz")
    assert int(one["n_levels"]) == int(two["n_levels"]) == 2
    for t in range(2):
        np.testing.assert_array_equal(one[f"assignment_{t}"], two[f"assignment_{t}"])
        np.testing.assert_allclose(one[f"centroids_{t}"], two[f"centroids_{t}"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(one["point_sqdist"], two["point_sqdist"], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(np.load(tmp_path / "w1" / "indices.npy"), np.load(tmp_path / "w2" / "indices.npy"))
    assert len(np.load(tmp_path / "w2" / "indices.npy")) == 400
