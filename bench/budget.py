"""Is the training budget at the plateau? `in` trained for several step counts, scored on
held-out base images that no shift trains on (never the test set), plus the transfer gain of each
model over random initialisation under evaluate's recipe.

The rule, fixed before this bench was first run (README, "Fair comparisons"): the budget is the
smallest step count of the sweep whose mean held-out top-1 over the replicates is within
`report.decision.margin` of the sweep's best. Warm-up stays 10% of the budget, as at 200 steps.

Usage (after `dvc repro`, inside the venv): python -m bench.budget [--steps 100 200 400 800]
Writes bench/out/budget.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch

from selectbench.core import layout, shards
from selectbench.core.io import read_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, replicate_seed
from selectbench.curation.context import Context
from selectbench.evaluation.evaluate import transfer
from selectbench.models import training
from selectbench.models.training import CL


def held_out(ctx: Context, shift: str, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, class-balanced draw of base-reserve train rows that the shift does not hold."""
    idx = pd.read_parquet(layout.curated(shift) / "index.parquet")
    used = set(idx.loc[idx["source"] == "train", "row"].tolist())
    rows = np.array([r for r in ctx.base_rows if r not in used])
    labels = ctx.train["labels"][rows]
    rng = np.random.default_rng(seed)
    pick = np.sort(np.concatenate([rng.choice(rows[labels == c], per_class, replace=False)
                                   for c in range(ctx.num_classes)]))
    return np.asarray(ctx.train_images[pick]), ctx.train["labels"][pick]


def transfer_gain(model, cfg: dict, tcfg: dict, num_classes: int, seed: int) -> float:
    """Mean over tasks of (model - same net from random init) fine-tuned top-1, evaluate's recipe."""
    torch.manual_seed(seed)
    scratch = timm.create_model(cfg["model"], pretrained=False, num_classes=num_classes,
                                in_chans=cfg.get("in_chans", 1)).to(memory_format=CL).eval()
    # The transfer mean is unweighted over tasks, so this is the mean of the per-task differences.
    return transfer(model, tcfg, cfg, seed)[0]["mean"] - transfer(scratch, tcfg, cfg, seed)[0]["mean"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.budget")
    ap.add_argument("--shift", default="in")
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400, 800])
    ap.add_argument("--replicates", nargs="+", default=["r1", "r2"])
    ap.add_argument("--per-class", type=int, default=200, help="held-out images per class")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="bench/out/budget.json")
    args = ap.parse_args(argv)
    limit_threads(all_threads())
    p = load_params(args.params)
    ctx = Context(p)
    x, y = held_out(ctx, args.shift, args.per_class, seed=get(p, "train.seed", int))
    counts = np.asarray(read_json(layout.curated(args.shift) / "stats.json")["count_per_class"])
    urls, sizes = shards.shard_urls(layout.shards(args.shift))
    tcfg = get(p, "transfer", dict)
    rows = []
    for steps in args.steps:
        for rep in args.replicates:
            cfg = training.check_config(dict(get(p, "train", dict)))
            cfg.update(steps=steps, warmup_steps=max(1, steps // 10), seed=replicate_seed(cfg["seed"], rep),
                       in_chans=shards.channels(layout.shards(args.shift)))
            model, summary = training.train(urls, sizes, counts, cfg, None)
            model.eval()
            top1 = float((training.predict(model, x, cfg).argmax(1) == y).mean())
            gain = transfer_gain(model, cfg, tcfg, len(counts),
                                 replicate_seed(get(p, "evaluate.seed", int), rep))
            rows.append({"steps": steps, "replicate": rep, "held_out_top1": top1, "transfer_gain": gain,
                         "train_s": round(summary["wall_s"], 2)})
            print(f"steps {steps} {rep}: held-out top-1 {top1:.4f}, transfer - random {gain:+.4f}, "
                  f"{summary['wall_s']:.1f} s", flush=True)
    df = pd.DataFrame(rows)
    mean = df.groupby("steps")[["held_out_top1", "transfer_gain", "train_s"]].mean()
    margin = get(p, "report.decision.margin", float)
    chosen = int(mean.index[mean["held_out_top1"] >= mean["held_out_top1"].max() - margin].min())
    print(mean.round(4).to_string())
    print(f"rule: smallest step count within {margin} of the best mean held-out top-1 -> {chosen}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"shift": args.shift, "held_out": int(len(y)), "margin": margin,
                                          "rows": rows, "chosen_steps": chosen}, indent=2))


if __name__ == "__main__":
    main()
