"""evaluate@<shift>-<rep>: the model-side utility metrics of one replicate ->
reports/metrics/<shift>/<rep>.json (DVC metrics) + reports/items/<shift>/<rep>.npz (per test item)."""
import argparse
import time

from selectbench.core import layout
from selectbench.core.io import write_json, write_npz
from selectbench.core.params import load_params
from selectbench.core.runtime import all_threads, limit_threads, stage_main
from selectbench.evaluation.evaluate import evaluate_run


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.evaluate")
    ap.add_argument("shift")
    ap.add_argument("rep", help="replicate name (its seeds derive from it), e.g. r1")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    limit_threads(all_threads())  # no data workers here, so every core computes
    p = load_params(args.params)
    out, items = evaluate_run(p, args.shift, args.rep)
    write_json(layout.metrics(args.shift, args.rep), out)
    write_npz(layout.items(args.shift, args.rep), **items)
    run = layout.run(args.shift, args.rep)
    write_json(layout.cost(f"evaluate_{run}"), {"wall_s": round(time.perf_counter() - t0, 2)})
    top1 = out.get("top1")
    print(f"evaluate@{run}: top1 {top1:.4f}" if top1 is not None else f"evaluate@{run}: {out['status']}",
          f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
