"""train@<shift>: the shared timm recipe on data/shards/<shift> -> models/<shift>/{model.safetensors, args.yaml}.

With train.nproc > 1 it relaunches itself under torchrun (DDP: gloo on CPU, NCCL on GPU).
"""
import argparse
import os
import subprocess
import sys

import numpy as np

from selectbench.core import layout, shards
from selectbench.core.errors import fail
from selectbench.core.io import read_json, write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import finish_distributed, init_distributed, stage_main
from selectbench.core.runtime import live as live_logger
from selectbench.models import checkpoint, training


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.train")
    ap.add_argument("shift")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # fault tests
    args = ap.parse_args(argv)
    p = load_params(args.params)
    cfg = training.check_config(dict(get(p, "train", dict)))
    # Set here, not in params, so args.yaml and the checkpoint fingerprint record what was trained on.
    chans = shards.channels(layout.shards(args.shift))
    if cfg.setdefault("in_chans", chans) != chans:
        raise fail("train.in_chans", f"{cfg['in_chans']}, but data/shards/{args.shift} holds {chans}-channel images")
    if cfg["nproc"] > 1 and "RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cfg['nproc']}",
               "-m", "stages.train", args.shift, "--params", args.params]
        raise SystemExit(subprocess.call(cmd))
    rank, world = init_distributed()
    out = layout.model(args.shift)
    ckpt_dir = layout.checkpoints(args.shift)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stats = read_json(layout.curated(args.shift) / "stats.json")
    counts = np.asarray(stats["count_per_class"])
    urls, sizes = shards.shard_urls(layout.shards(args.shift))
    resolved = {"shift": args.shift, "num_classes": int(len(counts)), "train": cfg, "samples": int(sum(sizes.values()))}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for f in out.glob("*"):
            f.unlink()
    if resolved["samples"] < cfg["batch_size"] * world:
        # Documented behaviour: a shift too small for one batch is skipped explicitly, not crashed on.
        if rank == 0:
            resolved["skipped"] = f"{resolved['samples']} samples < one batch of {cfg['batch_size'] * world}"
            training.write_skipped(out, resolved, layout.live(f"train_{args.shift}"), layout.cost(f"train_{args.shift}"))
            print(f"train@{args.shift}: skipped ({resolved['skipped']})")
        return

    live = live_logger(f"train_{args.shift}") if rank == 0 else None

    total = training.plan(cfg, resolved["samples"], world).steps

    def log(rec):
        if rec["step"] % 10 == 0 or rec["step"] == total:
            live.step = rec["step"]
            live.log_metric("train/loss", rec["loss"])
            live.log_metric("train/lr", rec["lr"])

    model, summary = training.train(urls, sizes, counts, cfg, ckpt_dir, log=log if live else None,
                                    rank=rank, world=world, stop_after=args.stop_after)
    if "stopped_at" in summary:
        print(f"train@{args.shift}: stopped at step {summary['stopped_at']} (as asked)")
        return
    if rank == 0:
        resolved.update({k: summary[k] for k in ("steps", "steps_per_epoch", "class_weights", "final_loss")})
        training.save_model(out, model, resolved)
        live.summary = {"images_per_s": summary["images_per_s"], "final_loss": summary["final_loss"]}
        live.end()
        write_json(layout.cost(f"train_{args.shift}"), {"wall_s": round(summary["wall_s"], 2),
                   "images_per_s": round(summary["images_per_s"], 1), "world": world, "steps": summary["steps"]})
        checkpoint.path(ckpt_dir).unlink(missing_ok=True)  # a finished run needs no resume point
        print(f"train@{args.shift}: {summary['steps']} steps, {summary['images_per_s']:.0f} img/s, "
              f"final loss {summary['final_loss']:.3f}")
    finish_distributed(world)


if __name__ == "__main__":
    main()
