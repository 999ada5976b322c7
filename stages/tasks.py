"""tasks: the transfer suite -> data/tasks/<task>.npz + summary.json (selectbench.evaluation.tasks)."""
import argparse
from pathlib import Path

from selectbench.core import layout
from selectbench.core.io import write_json
from selectbench.core.params import load_params
from selectbench.core.runtime import stage_main
from selectbench.evaluation.tasks import build_tasks


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.tasks")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.TASKS))
    args = ap.parse_args(argv)
    summary = build_tasks(load_params(args.params), Path(args.out))
    # Timings vary run to run; the summary file must not (DVC hashes it).
    write_json(Path(args.out) / "summary.json", {k: {kk: vv for kk, vv in v.items() if kk != "seconds"}
                                                 for k, v in summary.items()})
    bad = "; ".join(f"{k} {split} " + ", ".join(f"{why} {n}" for why, n in reasons.items())
                    for k, v in summary.items() for split, reasons in v.get("decode_errors", {}).items() if reasons)
    print("tasks:", {k: (v["train"], v["test"], v["classes"], v["seconds"]) for k, v in summary.items()},
          f"undecodable, left out: {bad or 'none'}")


if __name__ == "__main__":
    main()
