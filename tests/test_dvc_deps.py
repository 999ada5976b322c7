"""dvc.yaml lists, for every stage, each project module its code imports (directly or through
another module), so that editing any code a stage runs reruns that stage - and nothing else."""
import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Project files imported anywhere in a module (function-level imports included)."""
    tree = ast.parse(path.read_text())
    pkg = path.parent.name
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = pkg + ("." + base if base else "")
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            f = ROOT / (n.replace(".", "/") + ".py")
            if n.split(".")[0] in ("selectbench", "stages") and f.exists():
                out.add(f.relative_to(ROOT).as_posix())
    return out


def _closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(_imports(ROOT / f) - seen)
    return seen - {"selectbench/__init__.py", "stages/__init__.py"}


def test_every_stage_lists_the_code_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing, extra = {}, {}
    for name, st in stages.items():
        st = st.get("do", st)
        module = st["cmd"].split()[2]  # python -m stages.<name> ...
        code = _closure(module.replace(".", "/") + ".py")
        listed = {d for d in st["deps"] if d.endswith(".py")}
        if code - listed:
            missing[name] = sorted(code - listed)
        if listed - code:  # a stale code dep reruns the stage (and all below it) for nothing
            extra[name] = sorted(listed - code)
    assert not missing, f"dvc.yaml deps lack code the stage imports: {missing}"
    assert not extra, f"dvc.yaml lists code the stage does not import: {extra}"


def test_stage_modules_are_named_as_their_stages():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        st = st.get("do", st)
        assert st["cmd"].split()[2] == f"stages.{name}", name
