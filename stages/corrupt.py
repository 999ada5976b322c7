"""corrupt: the ImageNet-C analogue, built once from the test set (its own images per cell) and shared by all shifts."""
import argparse
from pathlib import Path

import numpy as np

from selectbench.core import layout
from selectbench.core.images import open_images
from selectbench.core.io import write_json
from selectbench.core.layout import load_split
from selectbench.core.params import get, load_params
from selectbench.core.runtime import stage_main
from selectbench.evaluation.corruptions import corrupted_set


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.corrupt")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.CORRUPTED))
    args = ap.parse_args(argv)
    p = load_params(args.params)
    n = get(p, "corrupt.n", int, lo=1)
    seed = get(p, "corrupt.seed", int)
    test = load_split(layout.TEST_SPLIT)
    images, labels, cidx, sev, names, pick = corrupted_set(open_images("test"), test["labels"], n, seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "corrupted.npz", images=images, labels=labels, corruption=cidx, severity=sev, test_rows=pick)
    per_cell, distinct = len(pick) // (len(names) * 5), len(np.unique(pick))
    write_json(out / "summary.json", {"corruptions": names, "severities": 5, "per_cell": per_cell,
                                      "images": int(len(images)), "distinct_test_images": distinct})
    print(f"corrupt: {len(names)} corruptions x 5 severities x {per_cell} images = {len(images)} "
          f"({distinct} distinct test images)")


if __name__ == "__main__":
    main()
