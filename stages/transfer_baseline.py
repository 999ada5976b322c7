"""transfer_baseline@<rep>: the transfer metric of the network every shift trains, from the
replicate's own initialisation and no pretraining at all. The report compares `in` with it: a
transfer score says something about a shift's data only if pretraining on expert data beats this."""
import argparse
import time

import torch

from selectbench.core import layout
from selectbench.core.classes import load as load_classes
from selectbench.core.images import open_images
from selectbench.core.io import write_json, write_npz
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, replicate_seed, stage_main
from selectbench.evaluation.evaluate import transfer, transfer_config
from selectbench.models.training import CL, new_model


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.transfer_baseline")
    ap.add_argument("rep", help="replicate name (its seeds derive from it), e.g. r1")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    limit_threads(all_threads())
    p = load_params(args.params)
    tcfg = transfer_config(p)
    # The base images' channels are what every base-derived shift's model takes (train sets it from its shards).
    cfg = {"model": get(p, "train.model", str), "img_size": get(p, "train.img_size", int, lo=8),
           "in_chans": 3 if open_images("test")[:1].ndim == 4 else 1}
    # train() seeds the model's initialisation with the replicate's train seed: the same network here.
    torch.manual_seed(replicate_seed(get(p, "train.seed", int), args.rep))
    model = new_model(cfg, len(load_classes().names)).to(memory_format=CL).eval()
    rec, items = transfer(model, tcfg, cfg, replicate_seed(get(p, "evaluate.seed", int), args.rep))
    record, scores = layout.random_init(args.rep)
    write_json(record, {"replicate": args.rep, "status": "ok", "init": "random", "transfer": rec})
    write_npz(scores, **items)
    print(f"transfer_baseline@{args.rep}: transfer mean {rec['mean']:.4f} from random initialisation "
          f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
