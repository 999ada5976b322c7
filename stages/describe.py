"""describe@<shift>: the dataset-side metrics of a shift (quality, label noise, SSL kNN per
replicate, example images) -> reports/metrics/<shift>/data.json + reports/items/<shift>/ssl.npz."""
import argparse
import time

from selectbench.core import layout
from selectbench.core.io import write_json, write_npz
from selectbench.core.params import load_params
from selectbench.core.runtime import all_threads, limit_threads, stage_main
from selectbench.evaluation.describe import describe_shift


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.describe")
    ap.add_argument("shift")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    limit_threads(all_threads())
    out, items = describe_shift(load_params(args.params), args.shift)
    write_json(layout.described(args.shift), out)
    write_npz(layout.items(args.shift, "ssl"), **items)
    write_json(layout.cost(f"describe_{args.shift}"), {"wall_s": round(time.perf_counter() - t0, 2)})
    print(f"describe@{args.shift}: {out['images']} images ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
