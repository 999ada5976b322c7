"""report: tables, figures, checked findings and reports/summary.json (selectbench.evaluation.report)."""
import argparse

from selectbench.core import layout
from selectbench.core.params import get, load_params
from selectbench.core.runtime import stage_main
from selectbench.evaluation.report.build import build_report


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.report")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.RESULTS))
    args = ap.parse_args(argv)
    p = load_params(args.params)
    present, found = build_report(p, args.out)
    print(f"report: {len(present)}/{len(get(p, 'shifts', dict))} shifts -> {args.out}/index.md")
    for f in found:
        print(f"  [{f['verdict']}] {f['claim']}")


if __name__ == "__main__":
    main()
