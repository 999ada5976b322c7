"""Every stage depends on the fingerprint of the code it runs (data/code/<stage>.txt, written by stage
`code` from the stage module's import closure), so that editing any code a stage runs reruns that
stage - and nothing else.

Profile code is the exception: `selectbench/embedded/` (the embedded default's world) and
`selectbench/full/` (the full profile's adapters) are listed as one interpolated directory,
`selectbench/${profile}`, by the stages that switch on the profile, so that editing one profile's
code never reruns the other profile's pipeline."""
import ast
import hashlib
from pathlib import Path

import yaml

from selectbench.core.imports import PROFILE_DIRS, closure, fingerprint, imports
from stages.code import stage_modules

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("embedded", "full")


def _stages():
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        yield name, st.get("do", st)


def test_package_inits_hold_no_code():
    # __init__ files are left out of deps, so they must not run anything a stage depends on.
    for f in (ROOT / "selectbench").rglob("__init__.py"):
        body = ast.parse(f.read_text()).body
        assert all(isinstance(n, ast.Expr) or (isinstance(n, ast.Assign) and f.parent.name == "selectbench")
                   for n in body), f


def _reaches_profile(module: str) -> bool:
    """Whether a stage module imports profile code, directly or through the code it runs."""
    return any(f.startswith(PROFILE_DIRS) for f in set().union(*(imports(ROOT, f) for f in closure(ROOT, module))))


def test_every_stage_depends_on_its_code_fingerprint():
    for name, st in _stages():
        if name == "code":
            continue
        deps = [d.split()[0] for d in st["deps"]]
        assert f"data/code/{name}.txt" in deps, name
        # Listing a code file as well would be a second, stale route to the same rerun.
        assert not [d for d in deps if d.endswith(".py")], name
        assert ("selectbench/${profile}" in deps) == _reaches_profile(f"stages/{name}.py"), name


def test_code_stage_fingerprints_every_stage_module():
    stages = dict(_stages())
    assert set(stage_modules(ROOT)) == set(stages) - {"code"}
    assert set(stages["code"]["deps"]) == {"selectbench", "stages"} and stages["code"]["outs"] == ["data/code"]


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_closure_known_answer(tmp_path):
    """Absolute, relative and function-level imports are followed; `from pkg import mod` names a
    module; __init__ files, profile code and third-party modules are left out."""
    root = _package(tmp_path, {
        "selectbench/__init__.py": "",
        "selectbench/core/__init__.py": "",
        "selectbench/core/a.py": "import numpy\nfrom . import b\n",
        "selectbench/core/b.py": "def f():\n    from selectbench.core.c import g\n",
        "selectbench/core/c.py": "from ..embedded import world\ng = 1\n",
        "selectbench/core/unused.py": "",
        "selectbench/embedded/__init__.py": "",
        "selectbench/embedded/world.py": "",
        "stages/__init__.py": "",
        "stages/s.py": "from selectbench.core import a\n",
        "stages/t.py": "import selectbench.core.b as b\n",
    })
    assert closure(root, "stages/s.py") == ["selectbench/core/a.py", "selectbench/core/b.py",
                                            "selectbench/core/c.py", "stages/s.py"]
    assert closure(root, "stages/t.py") == ["selectbench/core/b.py", "selectbench/core/c.py", "stages/t.py"]
    assert "selectbench/embedded/world.py" in imports(root, "selectbench/core/c.py")
    lines = fingerprint(root, closure(root, "stages/t.py")).splitlines()
    b_md5 = hashlib.md5(b"def f():\n    from selectbench.core.c import g\n").hexdigest()
    assert lines[0] == f"{b_md5}  selectbench/core/b.py"
    assert [ln.split("  ")[1] for ln in lines] == closure(root, "stages/t.py")


def test_an_edit_changes_only_the_fingerprints_that_hold_it(tmp_path):
    root = _package(tmp_path, {"selectbench/__init__.py": "", "selectbench/x.py": "", "selectbench/y.py": "",
                               "stages/__init__.py": "", "stages/s.py": "import selectbench.x\n",
                               "stages/t.py": "import selectbench.y\n"})
    before = {m: fingerprint(root, closure(root, f"stages/{m}.py")) for m in ("s", "t")}
    (root / "selectbench/x.py").write_text("# an edit\n")
    after = {m: fingerprint(root, closure(root, f"stages/{m}.py")) for m in ("s", "t")}
    assert after["s"] != before["s"] and after["t"] == before["t"]


def test_profiles_do_not_import_each_other():
    for p, other in (PROFILES, PROFILES[::-1]):
        for f in (ROOT / "selectbench" / p).rglob("*.py"):
            bad = sorted(d for d in imports(ROOT, f.relative_to(ROOT).as_posix()) if d.startswith(f"selectbench/{other}/"))
            assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_stage_modules_are_named_as_their_stages():
    for name, st in _stages():
        assert st["cmd"].split()[2] == f"stages.{name}", name


def test_lock_holds_only_defined_stages():
    """DVC keeps a renamed stage's entry in dvc.lock; a stale entry makes every lock rewrite (one per
    stage run) slower, so it is pruned rather than left behind."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        defined = {s.addressing for s in repo.index.stages}
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert locked <= defined, sorted(locked - defined)


def test_nothing_that_curates_judges():
    """The stages that score shifts read no output of the curation embedder (its model or its
    embeddings): their numbers come from each shift's own model or from the judges."""
    stages = dict(_stages())
    for name in ("describe", "evaluate", "report"):
        deps = set(stages[name].get("deps", []))
        assert not deps & {"models/embedder", "data/embeddings"}, name
    assert {"models/judge/encoder", "models/judge/classifier"} <= set(stages["describe"]["deps"])
