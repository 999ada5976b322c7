"""The project code a stage runs: the import closure of its module, read from the source.

Stage `code` writes one fingerprint per stage module (`data/code/<stage>.txt`: md5 and path of each
file in the closure) and every stage depends on its own fingerprint instead of listing its files.
An edit changes the fingerprints of exactly the stages that import the edited file, so the same
stages rerun as with per-file deps, while dvc.lock - which DVC parses and rewrites after every stage
- holds one entry per stage for its code instead of ~20 (2.2 s per stage at 13,390 lines, measured).

Profile code (`selectbench/embedded/`, `selectbench/full/`) is left out: the stages that switch on
the profile depend on `selectbench/${profile}` as a directory, so that editing one profile's code
never reruns the other profile's pipeline."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGES = ("selectbench", "stages")
PROFILE_DIRS = ("selectbench/embedded/", "selectbench/full/")


def module_file(root: Path, name: str) -> str | None:
    """`a.b.c` -> `a/b/c.py` or `a/b/c/__init__.py` under root (posix, relative), or None."""
    base = root / name.replace(".", "/")
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f.relative_to(root).as_posix()
    return None


def imports(root: Path, rel: str) -> set[str]:
    """Project files one module imports anywhere (function-level imports included): importing
    a.b.c runs a/__init__ and a/b/__init__ too, and `from a import b` may name a module b."""
    path = root / rel
    package = list(Path(rel).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] not in PACKAGES:
                continue
            for i in range(1, len(parts) + 1):
                f = module_file(root, ".".join(parts[:i]))
                if f:
                    out.add(f)
    return out


def closure(root: Path, entry: str) -> list[str]:
    """Sorted project files that `entry` (a path relative to root) runs, itself included, without
    package __init__ files (they hold no code: tests/test_dvc_deps.py) and without profile code."""
    seen, todo = set(), [entry]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(imports(root, f) - seen)
    return sorted(f for f in seen if not f.endswith("__init__.py") and not f.startswith(PROFILE_DIRS))


def fingerprint(root: Path, files: list[str]) -> str:
    """One line per file, `<md5>  <path>` (md5sum's format, so `md5sum -c` checks it)."""
    return "".join(f"{hashlib.md5((root / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
