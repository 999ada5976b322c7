"""Does the transfer metric see the pretraining data? A shift's trained models against the same
architecture from random initialisation, each fine-tuned with evaluate's recipe, replicate seeds and
test items (a diagnostic, not a stage).

Usage (after `dvc repro`, inside the venv): python -m bench.transfer_baseline [--shift in]
Prints one row per replicate and task, then the mean paired difference (shift - random) per
replicate, and writes bench/out/transfer_baseline.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import timm
import torch

from selectbench.core import layout
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, replicate_seed
from selectbench.evaluation.evaluate import transfer
from selectbench.models.training import CL, load_model


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.transfer_baseline")
    ap.add_argument("--shift", default="in")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="bench/out/transfer_baseline.json")
    args = ap.parse_args(argv)
    limit_threads(all_threads())
    p = load_params(args.params)
    tcfg = get(p, "transfer", dict)
    rows = []
    for rep in get(p, "replicates", list):
        seed = replicate_seed(get(p, "evaluate.seed", int), rep)
        model, resolved = load_model(layout.model(args.shift, rep))
        if model is None:
            continue
        cfg = resolved["train"]
        torch.manual_seed(seed)
        scratch = timm.create_model(cfg["model"], pretrained=False, num_classes=resolved["num_classes"],
                                    in_chans=cfg.get("in_chans", 1)).to(memory_format=CL).eval()
        ours, theirs = (transfer(m, tcfg, cfg, seed)[0]["tasks"] for m in (model, scratch))
        for task in tcfg["tasks"]:
            acc, n = (ours[task]["top1"], theirs[task]["top1"]), ours[task]["n"]
            rows.append({"replicate": rep, "task": task, args.shift: acc[0], "random": acc[1], "n": n})
            print(f"{rep} {task}: {args.shift} {acc[0]:.3f}, random init {acc[1]:.3f} (n={n})")
    per_rep = {}
    for r in rows:
        per_rep.setdefault(r["replicate"], []).append(r[args.shift] - r["random"])
    summary = {rep: float(np.mean(v)) for rep, v in per_rep.items()}
    print(f"mean over tasks, {args.shift} - random, per replicate:",
          ", ".join(f"{k} {v:+.3f}" for k, v in summary.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"shift": args.shift, "steps": tcfg["steps"], "rows": rows,
                                          "mean_difference": summary}, indent=2))


if __name__ == "__main__":
    main()
