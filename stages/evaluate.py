"""evaluate@<shift>: every per-shift utility metric -> reports/metrics/<shift>.json (DVC metrics)."""
import argparse
import time

from selectbench.core import layout
from selectbench.core.io import write_json
from selectbench.core.params import load_params
from selectbench.core.runtime import stage_main
from selectbench.evaluation.evaluate import evaluate_shift


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.evaluate")
    ap.add_argument("shift")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = evaluate_shift(load_params(args.params), args.shift)
    write_json(layout.metrics(args.shift), out)
    write_json(layout.cost(f"evaluate_{args.shift}"), {"wall_s": round(time.perf_counter() - t0, 2)})
    top1 = out.get("top1")
    print(f"evaluate@{args.shift}: top1 {top1:.4f}" if top1 is not None else f"evaluate@{args.shift}: {out['status']}",
          f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
