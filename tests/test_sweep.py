"""bench.sweep reads a parameter sweep back from a real `dvc exp show --json` (a toy stage, two
experiments and a failed one) and draws it."""
import json
import os
import subprocess
import sys

import pytest

from bench import sweep
from tests.project import DVC, GIT, ROOT, inside, project_env

STAGE = '''import json, os, yaml
t = yaml.safe_load(open("params.yaml"))["curation"]["clip_threshold"]
if t > 0.9:
    raise SystemExit("refused")  # a failed experiment: no metric
os.makedirs("reports", exist_ok=True)
json.dump({"la": {"top1": {"mean": t / 2, "lo": t / 2 - 0.1, "hi": t / 2 + 0.1, "n": 3}}}, open("reports/summary.json", "w"))
'''

DVC_YAML = '''stages:
  s:
    cmd: python s.py
    deps: [s.py]
    params: [curation.clip_threshold]
    metrics:
      - reports/summary.json:
          cache: false
'''


@pytest.mark.integration
def test_sweep_reads_experiments_from_dvc_exp_show(tmp_path):
    d = tmp_path
    (d / "params.yaml").write_text("curation:\n  clip_threshold: 0.5\n")
    (d / "s.py").write_text(STAGE)
    (d / "dvc.yaml").write_text(DVC_YAML)
    env = {**os.environ, **project_env(d)}
    subprocess.run(GIT + ["init", "-q"], cwd=d, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=d, check=True, env=env)
    subprocess.run(GIT + ["add", "-A"], cwd=d, check=True)
    subprocess.run(GIT + ["commit", "-qm", "init"], cwd=d, check=True)
    for v in ("0.3", "0.7", "0.95"):
        subprocess.run([DVC, "exp", "run", "-q", "-S", f"curation.clip_threshold={v}"], cwd=d, env=env,
                       capture_output=True)
    show = subprocess.run([DVC, "exp", "show", "--json"], cwd=d, env=env, capture_output=True, text=True, check=True)
    df = sweep.points(json.loads(show.stdout), "curation.clip_threshold", "la", "top1")
    # 0.95 failed (no metric) and the baseline 0.5 never ran: 0.3 and 0.7 remain, in order.
    assert df["curation.clip_threshold"].tolist() == [0.3, 0.7]
    assert df["mean"].tolist() == pytest.approx([0.15, 0.35]) and df["hi"].tolist() == pytest.approx([0.25, 0.45])
    with inside(d):
        sweep.main(["--param", "curation.clip_threshold", "--shift", "la", "--out", "out"])
    assert (d / "out/sweep_curation_clip_threshold_la_top1.png").stat().st_size > 1000
    (d / "show.json").write_text(show.stdout)
    r = subprocess.run([sys.executable, "-m", "bench.sweep", "--param", "nope.key", "--shift", "la",
                        "--show-json", str(d / "show.json")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "no run has both nope.key" in r.stderr and "Traceback" not in r.stderr
