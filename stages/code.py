"""code: the fingerprint of the code each stage runs -> data/code/<stage>.txt (one per stage module).

Each file lists md5 and path of every project file in its stage module's import closure
(selectbench.core.imports); every stage depends on its own file. An edit anywhere reruns this
stage (under a second), and then exactly the stages whose closure holds the edited file.

    python -m stages.code [--out data/code]
"""
import argparse
import shutil
from pathlib import Path

from selectbench.core import layout
from selectbench.core.imports import closure, fingerprint
from selectbench.core.io import atomic_path
from selectbench.core.runtime import stage_main

ROOT = Path(__file__).resolve().parents[1]


def stage_modules(root: Path) -> list[str]:
    return sorted(f.stem for f in (root / "stages").glob("*.py") if f.stem not in ("__init__", "code"))


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.code", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(layout.CODE))
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    names = stage_modules(ROOT)
    for name in names:
        with atomic_path(out / layout.code(name).relative_to(layout.CODE)) as tmp:
            tmp.write_text(fingerprint(ROOT, closure(ROOT, f"stages/{name}.py")))
    print(f"code: fingerprints of {len(names)} stage modules -> {out}")


if __name__ == "__main__":
    main()
