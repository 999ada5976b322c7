"""Does the transfer metric see the pretraining data? A shift's trained models against the same
networks from their random initialisation (what stage transfer_baseline scores), both scored with
one transfer protocol, seed and set of test items (a diagnostic, not a stage).

`--rule` applies docs/simulation.md section 16, fixed before any candidate ran: the candidates in
their order, each calibrated on seed 101 (never a reported run's), until the first whose paired
interval (shift - random over the same items, the tasks as strata, replicates as seeds) lies above
`report.decision.margin`. That candidate is the protocol to adopt; none means transfer stays
unvalidated.

Usage (after `dvc repro`, inside the venv):
  python -m bench.transfer_baseline --rule
  python -m bench.transfer_baseline --protocol linear --steps 1000 [--shift in] [--seed 101]
Writes bench/out/transfer_baseline.json.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from selectbench.core import layout
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, replicate_seed
from selectbench.evaluation import stats
from selectbench.evaluation.evaluate import transfer, transfer_config
from selectbench.evaluation.utility import PROTOCOLS
from selectbench.models.training import CL, load_model, new_model

CANDIDATES = [("finetune", 200), ("finetune", 1000), ("linear", 1000)]  # section 16's order
CALIBRATION_SEED = 101


def paired_items(p: dict, shift: str, tcfg: dict, seed: int) -> dict:
    """Per replicate, the shift's and the random initialisation's transfer items (bool [N] each)
    and the task of each item; replicates without a trained model are left out."""
    out = {"reps": [], "shift": [], "random": [], "strata": None, "tasks": []}
    for rep in get(p, "replicates", list):
        model, resolved = load_model(layout.model(shift, rep))
        if model is None:
            continue
        cfg = resolved["train"]
        torch.manual_seed(cfg["seed"])  # train()'s seeding: the network this model started from
        scratch = new_model(cfg, resolved["num_classes"]).to(memory_format=CL).eval()
        ev_seed = replicate_seed(seed, rep)
        (rec, ours), (theirs_rec, theirs) = (transfer(m, tcfg, cfg, ev_seed) for m in (model, scratch))
        out["reps"].append(rep)
        out["shift"].append(ours["transfer"])
        out["random"].append(theirs["transfer"])
        out["strata"] = ours["transfer_strata"]
        out["tasks"].append({t: [rec["tasks"][t]["top1"], theirs_rec["tasks"][t]["top1"]] for t in tcfg["tasks"]})
    return out


def calibrate(p: dict, shift: str, protocol: str, steps: int, seed: int) -> dict:
    tcfg = {**transfer_config(p), "protocol": protocol, "steps": steps}
    dec = get(p, "report.decision", dict)
    t0 = time.perf_counter()
    d = paired_items(p, shift, tcfg, seed)
    if not d["reps"]:
        raise SystemExit(f"error: no trained model of {shift!r}; run `dvc repro` first")
    iv = stats.paired(np.array(d["shift"]), np.array(d["random"]), d["strata"], dec["confidence"])
    qualifies = bool(iv.complete and iv.lo > dec["margin"])
    rec = {"protocol": protocol, "steps": steps, "seed": seed, "shift": shift, "replicates": d["reps"],
           "per_task_top1": dict(zip(d["reps"], d["tasks"])), "difference": iv.record(),
           "margin": dec["margin"], "qualifies": qualifies, "seconds": round(time.perf_counter() - t0, 1)}
    span = f"[{iv.lo:+.4f}, {iv.hi:+.4f}]" if iv.complete else f"({iv.note})"
    print(f"{protocol} {steps} steps, seed {seed}: {shift} - random {iv.mean:+.4f} {span}, "
          f"{'above' if qualifies else 'not above'} the margin {dec['margin']} ({rec['seconds']:.0f}s)", flush=True)
    for rep, tasks in rec["per_task_top1"].items():
        print("  " + rep + ": " + ", ".join(f"{t} {a:.3f} vs {b:.3f}" for t, (a, b) in tasks.items()), flush=True)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.transfer_baseline")
    ap.add_argument("--shift", default="in")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--rule", action="store_true", help="run section 16's candidates in order, stop at the first that qualifies")
    ap.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: transfer.protocol")
    ap.add_argument("--steps", type=int, default=None, help="training steps per task (default: transfer.steps)")
    ap.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="evaluate seed of the calibration")
    ap.add_argument("--out", default="bench/out/transfer_baseline.json")
    args = ap.parse_args(argv)
    limit_threads(all_threads())
    p = load_params(args.params)
    if args.rule:
        runs, choice = [], None
        for protocol, steps in CANDIDATES:
            runs.append(calibrate(p, args.shift, protocol, steps, CALIBRATION_SEED))
            if runs[-1]["qualifies"]:
                choice = {"protocol": protocol, "steps": steps}
                break
        print("choice:", f"{choice['protocol']}, {choice['steps']} steps" if choice
              else "none qualifies; transfer stays unvalidated")
        result = {"rule": "docs/simulation.md section 16", "candidates": runs, "choice": choice}
    else:
        tcfg = transfer_config(p)
        protocol = args.protocol or tcfg["protocol"]
        steps = tcfg["steps"] if args.steps is None else args.steps
        result = {"candidates": [calibrate(p, args.shift, protocol, steps, args.seed)]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
