"""curate@<shift>: run the shift's strategy -> data/curated/<shift>/{index.parquet, stats.json[, generated/]}.

With curation.nproc > 1, the strategies that split their work (registry.DISTRIBUTED: hierarchical
k-means over points, generation over shards) run as that many torchrun ranks; the outputs are
the ones one process writes. Generated shards persist in data/tmp/generate/<shift> until the
stage finishes, so a killed run resumes from the shards it completed."""
import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

from selectbench.core import layout
from selectbench.core.comm import LOCAL
from selectbench.core.genshards import GeneratedImages
from selectbench.core.index import write_index
from selectbench.core.io import write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, finish_distributed, limit_threads, stage_main, start_ranks
from selectbench.curation import context
from selectbench.curation import registry as curation
from selectbench.curation.generated import RankFinished
from selectbench.evaluation import counts as count_stats
from selectbench.evaluation import noise


def shift_stats(ctx: context.Context, cur: context.Curated, tail_threshold: int) -> dict:
    """Counts, coverage and (where the hidden truth is known) label precision of a curated index."""
    idx = cur.index
    counts = count_stats.class_counts(idx["label"].to_numpy(), ctx.num_classes)
    stats = {
        **cur.stats,
        "images": int(len(idx)),
        "count_per_class": counts.tolist(),
        **count_stats.count_summary(counts),
        "gini": count_stats.gini(counts),
        "long_tail": count_stats.long_tail(counts, tail_threshold),
        "empty_classes": [i for i, n in enumerate(counts) if n == 0],
        "sources": idx["source"].value_counts().sort_index().to_dict(),
    }
    truth = context.truth_of(ctx, idx)
    known = truth != -2
    if known.any():
        overall, per_class = noise.label_precision(idx["label"].to_numpy()[known], truth[known], ctx.num_classes)
        stats["label_precision"] = overall
        stats["label_precision_per_class"] = [None if np.isnan(v) else float(v) for v in per_class]
        stats["label_precision_known_share"] = float(known.mean())
    return stats


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.curate")
    ap.add_argument("shift")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=None, help="default: data/curated/<shift>")
    ap.add_argument("--cost", default=None, help="default: reports/cost/curate_<shift>.json")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    if curation.strategy_of(params, args.shift) in curation.DISTRIBUTED:
        extra = [a for k, v in (("--out", args.out), ("--cost", args.cost)) if v for a in (k, v)]
        comm = start_ranks(get(params, "curation.nproc", int, lo=1), "stages.curate",
                           [args.shift, "--params", args.params, *extra], get(params, "curation.nnodes", int, lo=1))
    else:
        comm = LOCAL
        limit_threads(all_threads())  # no worker processes: every core computes
    rank, world = comm.rank, comm.world
    out = Path(args.out) if args.out else layout.curated(args.shift)
    ctx = context.Context(params, comm=comm)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        cur = curation.run(ctx, args.shift)
    except RankFinished:  # a worker rank's generated shards are written; rank 0 finishes the stage
        cur = None
    if rank != 0:  # hkm: a worker's share is all-reduced into the tree rank 0 draws from
        finish_distributed(world)
        return
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tail = params.get("report", {}).get("tail_threshold", 100)
    stats = shift_stats(ctx, cur, tail)
    if out.exists():
        shutil.rmtree(out)
    write_index(cur.index, out / "index.parquet")
    if isinstance(cur.images, GeneratedImages):  # the finished shards become the output, uncopied
        os.replace(cur.images.dir, layout.generated(out))
    write_json(out / "stats.json", stats)
    # Wall-clock cost lives apart from the content-hashed outputs so that timings never change them.
    write_json(args.cost or layout.cost(f"curate_{args.shift}"),
               {"shift": args.shift, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                "images": int(len(cur.index)), "images_per_s": round(len(cur.index) / max(wall, 1e-9), 2)})
    if len(cur.index) == 0:
        print(f"warning: shift {args.shift!r} curated 0 images; training will skip it", flush=True)
    elif stats["empty_classes"]:
        print(f"warning: shift {args.shift!r} has no images for classes {stats['empty_classes']}", flush=True)
    msg = f"curate@{args.shift}: {len(cur.index)} images, coverage {stats['coverage']}/{ctx.num_classes}"
    if "label_precision" in stats:
        msg += f", label precision {stats['label_precision']:.3f}"
    print(msg + f" ({wall:.1f}s{f' on {world} ranks' if world > 1 else ''})")
    finish_distributed(world)


if __name__ == "__main__":
    main()
