"""A temporary copy of the project as its own git + DVC repository, for integration tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from tests.tiny import write

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
DVC = str(Path(sys.executable).parent / "dvc")
# Stages DVC runs on every repro (always_changed): `manifests` looks at the external datasets; an
# unchanged dataset gives a byte-identical manifest, so nothing below it reruns.
ALWAYS = {"manifests"}
UP_TO_DATE = {s: ["always changed"] for s in ALWAYS}  # what repo.status() says when nothing else changed


def copy_project(dst: Path) -> None:
    """The source files git knows (tracked or not ignored), without built outputs or dvc.lock."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        built = f.startswith(("data/", "models/", "checkpoints/", "reports/", "bench/out")) and not f.startswith("data/meta/")
        if src.is_file() and not built and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def project_env(d: Path) -> dict[str, str]:
    """Environment for DVC in the copy: its own site cache, no analytics, this venv's tools first."""
    return {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(d / ".site-cache"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "2"}


def make_project(d: Path, params: dict | None = None) -> Path:
    """Copy the project into d, write `params` as its params.yaml, and commit it all (DVC
    experiments need a commit)."""
    copy_project(d)
    if params is not None:
        write(params, d / "params.yaml")
    subprocess.run(GIT + ["init", "-q"], cwd=d, check=True)
    subprocess.run(GIT + ["add", "-A"], cwd=d, check=True)
    subprocess.run(GIT + ["commit", "-qm", "init"], cwd=d, check=True)
    return d


@contextmanager
def inside(d: Path):
    """Run in d with project_env(d) set (for dvc.repo.Repo in-process); restores both after."""
    env = project_env(d)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        yield d
    finally:
        os.chdir(cwd)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
