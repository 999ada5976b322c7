"""evaluate@<shift>-<rep>: the model-side utility metrics of one replicate ->
reports/metrics/<shift>/<rep>.json (DVC metrics) + reports/items/<shift>/<rep>.npz (per test item).

With evaluate.nproc > 1 it relaunches itself under torchrun: the ranks split inference batches and
transfer tasks, rank 0 writes the same bytes one process does (selectbench.core.comm)."""
import argparse
import time

from selectbench.core import layout
from selectbench.core.io import write_json, write_npz
from selectbench.core.params import get, load_params
from selectbench.core.runtime import finish_distributed, stage_main, start_ranks
from selectbench.evaluation.evaluate import evaluate_run, transfer_config


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.evaluate")
    ap.add_argument("shift")
    ap.add_argument("rep", help="replicate name (its seeds derive from it), e.g. r1")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    p = load_params(args.params)
    nproc = get(p, "evaluate.nproc", int, lo=1)
    transfer_config(p)  # a bad protocol fails here, before any rank starts
    comm = start_ranks(nproc, "stages.evaluate", [args.shift, args.rep, "--params", args.params])
    rank, world = comm.rank, comm.world
    result = evaluate_run(p, args.shift, args.rep, comm)
    if rank == 0:
        out, items = result
        write_json(layout.metrics(args.shift, args.rep), out)
        write_npz(layout.items(args.shift, args.rep), **items)
        run = layout.run(args.shift, args.rep)
        write_json(layout.cost(f"evaluate_{run}"), {"wall_s": round(time.perf_counter() - t0, 2), "world": world})
        top1 = out.get("top1")
        print(f"evaluate@{run}: top1 {top1:.4f}" if top1 is not None else f"evaluate@{run}: {out['status']}",
              f"({time.perf_counter() - t0:.0f}s)")
    finish_distributed(world)


if __name__ == "__main__":
    main()
