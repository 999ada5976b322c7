"""The collectives stages split their work with (selectbench.core.comm), under torchrun with 1, 2 and
3 ranks (gloo): batches mapped in item order, shards written by their owner rank with the bytes
one process writes, rows gathered exactly."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selectbench.core import shards
from selectbench.core.comm import LOCAL, map_batches, shard_range

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
from selectbench.core import shards
from selectbench.core.comm import Dist, LOCAL, map_batches, shard_range
from selectbench.core.runtime import finish_distributed, init_distributed
from tests.test_comm import shard_samples

out = Path(sys.argv[1])
rank, world = init_distributed()
comm = Dist() if world > 1 else LOCAL
got = map_batches(lambda s, e: np.arange(s, e) * 2, 10, 3, comm)
x = np.arange(14 * 3, dtype=np.float32).reshape(14, 3)
lo, hi = shard_range(len(x), rank, world)
rows = comm.rows(x[lo:hi], np.array([13, 0, 6]))
cat = comm.cat(np.arange(lo, hi))
sizes = shards.write_shards_split(shard_samples, 5, out / "shards", comm)
flags = [comm.any(rank == world - 1), comm.any(False)]
offset = comm.offset(hi - lo)[1]  # a collective: every rank calls it
if rank == 0:
    (out / "result.json").write_text(json.dumps({
        "batches": [b.tolist() for b in got], "rows": rows.tolist(), "cat": cat.tolist(), "sizes": sizes,
        "total": offset, "flags": flags}))
finish_distributed(world)
"""


def shard_samples(s: int):
    """Shard s: positions 4s..4s+3, with position 6 left out (an undecodable image)."""
    rng = np.random.default_rng(s)
    for pos in range(4 * s, min(18, 4 * s + 4)):
        if pos != 6:
            yield f"{pos:08d}", rng.integers(0, 255, (8, 8), dtype=np.uint8), pos % 3, {"pos": pos}


def _run(world: int, out: Path) -> dict:
    import json

    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
                        "--no-python", sys.executable, "-c", SCRIPT, str(out)],
                       capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_local_map_batches_and_split_shards_match_the_streaming_writer(tmp_path):
    assert [b.tolist() for b in map_batches(lambda s, e: np.arange(s, e), 7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert map_batches(lambda s, e: 1 / 0, 0, 3) == []
    assert list(LOCAL.mine(3)) == [0, 1, 2] and LOCAL.merge({1: "a"}) == {1: "a"}

    def full(s):  # every position present: the split writer must give write_shards' bytes
        for pos in range(4 * s, min(18, 4 * s + 4)):
            yield f"{pos:08d}", np.full((8, 8), pos, np.uint8), pos % 3, {}

    sizes = shards.write_shards_split(full, 5, tmp_path / "split")
    ref = shards.write_shards((x for s in range(5) for x in full(s)), tmp_path / "stream", 4)
    assert sizes == ref and not (tmp_path / "split.partial").exists()
    for f in sorted((tmp_path / "stream").iterdir()):
        assert (tmp_path / "split" / f.name).read_bytes() == f.read_bytes(), f.name


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


def test_one_two_and_three_ranks_give_the_same_results_and_bytes(tmp_path):
    res = {w: _run(w, tmp_path / f"w{w}") for w in (1, 2, 3)}
    for w in (2, 3):
        assert res[w]["batches"] == res[1]["batches"] == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
        assert res[w]["rows"] == res[1]["rows"] == [[39, 40, 41], [0, 1, 2], [18, 19, 20]]
        assert res[w]["cat"] == list(range(14)) and res[w]["total"] == 14
        assert res[w]["flags"] == [True, False]
        assert res[w]["sizes"] == res[1]["sizes"] == {f"shard-{s:06d}.tar": n for s, n in enumerate([4, 3, 4, 4, 2])}
        for f in sorted((tmp_path / "w1" / "shards").iterdir()):
            assert (tmp_path / f"w{w}" / "shards" / f.name).read_bytes() == f.read_bytes(), (w, f.name)


def test_run_distributed_builds_torchrun_commands_and_fails_in_one_line(monkeypatch):
    from selectbench.core import runtime
    from selectbench.core.errors import UserError

    calls = []
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    runtime.run_distributed(1, "stages.x", ["a"])  # one process: nothing relaunched
    assert calls == []
    with pytest.raises(SystemExit) as e:
        runtime.run_distributed(2, "stages.x", ["a", "--params", "p.yaml"])
    assert e.value.code == 0
    assert calls[0][1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
                            "-m", "stages.x", "a", "--params", "p.yaml"]
    for k, v in {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234", "SLURM_JOB_ID": "77"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit):
        runtime.run_distributed(4, "stages.x", [], nnodes=3)
    assert {"--nproc-per-node=4", "--nnodes=3", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.1:1234",
            "--rdzv-id=77"} <= set(calls[1]) and "--standalone" not in calls[1]
    monkeypatch.delenv("MASTER_ADDR")
    with pytest.raises(UserError, match="MASTER_ADDR"):
        runtime.run_distributed(1, "stages.x", [], nnodes=2)
    monkeypatch.setattr(subprocess, "call", lambda cmd: 1)
    with pytest.raises(UserError, match="a rank failed under torchrun"):
        runtime.run_distributed(2, "stages.x", [])
    monkeypatch.setenv("RANK", "0")  # already a rank: goes on
    runtime.run_distributed(2, "stages.x", [])
