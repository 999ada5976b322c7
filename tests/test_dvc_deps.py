"""dvc.yaml lists, for every stage, each project module its code imports (directly or through
another module), so that editing any code a stage runs reruns that stage - and nothing else.

Profile code is the exception: `selectbench/embedded/` (the embedded default's world) and
`selectbench/full/` (the full profile's adapters) are listed as one interpolated directory,
`selectbench/${profile}`, by the stages that switch on the profile, so that editing one profile's
code never reruns the other profile's pipeline."""
import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("embedded", "full")
PROFILE_DIRS = tuple(f"selectbench/{p}/" for p in PROFILES)


def _module_file(name: str) -> str | None:
    base = ROOT / name.replace(".", "/")
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.exists():
            return f.relative_to(ROOT).as_posix()
    return None


def _imports(path: Path) -> set[str]:
    """Project files imported anywhere in a module (function-level imports included)."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] not in ("selectbench", "stages"):
                continue
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ too
                f = _module_file(".".join(parts[:i]))
                if f:
                    out.add(f)
    return out


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(_imports(ROOT / f) - seen)
    return {f for f in seen if not f.endswith("__init__.py")}


def _stages():
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        yield name, st.get("do", st)


def test_package_inits_hold_no_code():
    # __init__ files are left out of deps, so they must not run anything a stage depends on.
    for f in (ROOT / "selectbench").rglob("__init__.py"):
        body = ast.parse(f.read_text()).body
        assert all(isinstance(n, ast.Expr) or (isinstance(n, ast.Assign) and f.parent.name == "selectbench")
                   for n in body), f


def test_every_stage_lists_the_code_it_runs():
    missing, extra = {}, {}
    for name, st in _stages():
        module = st["cmd"].split()[2]  # python -m stages.<name> ...
        code = _closure(module.replace(".", "/") + ".py")
        listed = {d for d in st["deps"] if d.endswith(".py")}
        if "selectbench/${profile}" in st["deps"]:
            code = {f for f in code if not f.startswith(PROFILE_DIRS)}
        if code - listed:
            missing[name] = sorted(code - listed)
        if listed - code:  # a stale code dep reruns the stage (and all below it) for nothing
            extra[name] = sorted(listed - code)
    assert not missing, f"dvc.yaml deps lack code the stage imports: {missing}"
    assert not extra, f"dvc.yaml lists code the stage does not import: {extra}"


def test_profiles_do_not_import_each_other():
    for p, other in (PROFILES, PROFILES[::-1]):
        for f in (ROOT / "selectbench" / p).rglob("*.py"):
            bad = sorted(d for d in _imports(f) if d.startswith(f"selectbench/{other}/"))
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
