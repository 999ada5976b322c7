"""Hierarchical k-means split across ranks (torch.distributed, gloo) fits the tree one process fits:
identical labels at every level, centroids within float tolerance, the same balanced draw."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _run(world: int, emb: Path, out: Path, extra: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
           "-m", "selectbench.curation.hkm", str(emb), "--select", "400", "--levels", "50,6", "--chunk", "128",
           "--out", str(out), "--no-progress", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]


def _points(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, 8)) * 4
    # An odd count, so the ranks hold blocks of different sizes and the chunks straddle them.
    return (centres[rng.integers(0, 30, 2501)] + rng.normal(size=(2501, 8))).astype(np.float32)


def _same_tree(one, two) -> None:
    assert int(one["n_levels"]) == int(two["n_levels"]) == 2
    for t in range(2):
        np.testing.assert_array_equal(one[f"assignment_{t}"], two[f"assignment_{t}"])
        np.testing.assert_allclose(one[f"centroids_{t}"], two[f"centroids_{t}"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(one["point_sqdist"], two["point_sqdist"], rtol=1e-4, atol=1e-3)


def test_the_cli_on_two_ranks_fits_the_one_process_tree(tmp_path):
    np.save(tmp_path / "x.npy", _points())
    _run(1, tmp_path / "x.npy", tmp_path / "w1", [])
    _run(2, tmp_path / "x.npy", tmp_path / "w2", [])
    _same_tree(np.load(tmp_path / "w1" / "tree.npz"), np.load(tmp_path / "w2" / "tree.npz"))
    np.testing.assert_array_equal(np.load(tmp_path / "w1" / "indices.npy"), np.load(tmp_path / "w2" / "indices.npy"))
    assert len(np.load(tmp_path / "w2" / "indices.npy")) == 400


def test_two_nodes_through_a_c10d_rendezvous_fit_the_one_process_tree(tmp_path):
    """Two torchrun launchers of one rank each meet at a c10d rendezvous on localhost, as two
    machines would at $MASTER_ADDR:$MASTER_PORT."""
    import socket

    np.save(tmp_path / "x.npy", _points())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=hkm-test", "-m", "selectbench.curation.hkm",
           str(tmp_path / "x.npy"), "--select", "400", "--levels", "50,6", "--chunk", "128", "--no-progress"]
    nodes = [subprocess.Popen([*cmd, "--out", str(tmp_path / f"node{i}")], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in nodes]
    assert all(p.returncode == 0 for p in nodes), logs
    out = next(tmp_path / f"node{i}" for i in range(2) if (tmp_path / f"node{i}" / "tree.npz").exists())
    _run(1, tmp_path / "x.npy", tmp_path / "w1", [])
    _same_tree(np.load(tmp_path / "w1" / "tree.npz"), np.load(out / "tree.npz"))
    np.testing.assert_array_equal(np.load(tmp_path / "w1" / "indices.npy"), np.load(out / "indices.npy"))
    assert '"ranks": 2' in (out / "summary.json").read_text()


# Every option path of the split fit in one torchrun launch: each rank fits its block, rank 0 also
# fits all rows as one process and saves both trees.
SCRIPT = r"""
import sys
import numpy as np
from selectbench.core.comm import LOCAL, Dist, shard_range
from selectbench.core.runtime import finish_distributed, init_distributed
from selectbench.curation.hkm.fit import fit
from selectbench.curation.hkm.sample import balanced_sample
from tests.test_hkm_distributed import CONFIGS, _points

rank, world = init_distributed()
x = _points(1)
lo, hi = shard_range(len(x), rank, world)
for i, cfg in enumerate(CONFIGS):
    split = fit(x[lo:hi], [50, 6], chunk=128, comm=Dist(), **cfg)
    if rank == 0:
        one = fit(x, [50, 6], chunk=128, comm=LOCAL, **cfg)
        for name, tree in (("one", one), ("two", split)):
            tree.save(f"{sys.argv[1]}/{name}{i}.npz")
            np.save(f"{sys.argv[1]}/{name}{i}.draw.npy", balanced_sample(tree, 300, leaf="closest", seed=2))
finish_distributed(world)
"""
CONFIGS = [
    {"sample_strategy": "random", "init_sample": None, "resample_steps": [2, 1]},  # seeding on all rows
    {"init": "random", "seed": 3},
    {"init_trials": 1, "sample_size": [3, 2], "seed": 5},
]


def test_every_option_on_two_ranks_fits_the_one_process_tree(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "--no-python", sys.executable, "-c", SCRIPT, str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    for i in range(len(CONFIGS)):
        _same_tree(np.load(tmp_path / f"one{i}.npz"), np.load(tmp_path / f"two{i}.npz"))
        np.testing.assert_array_equal(np.load(tmp_path / f"one{i}.draw.npy"), np.load(tmp_path / f"two{i}.draw.npy"))
