"""train@<shift>-<rep>: the shared timm recipe on data/shards/<shift> -> models/<shift>/<rep>/{model.safetensors, args.yaml}.

Each replicate trains with its own seed (init, data order, augmentation, mixup), derived from
train.seed and the replicate's name. With train.nproc > 1 it relaunches itself under torchrun
(DDP: gloo on CPU, NCCL on GPU).
"""
import argparse

import numpy as np

from selectbench.core import layout, shards
from selectbench.core.errors import fail
from selectbench.core.io import read_json, write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import finish_distributed, init_distributed, replicate_seed, run_distributed, stage_main
from selectbench.core.runtime import live as live_logger
from selectbench.models import checkpoint, training


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.train")
    ap.add_argument("shift")
    ap.add_argument("rep", help="replicate name (its seeds derive from it), e.g. r1")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # fault tests
    args = ap.parse_args(argv)
    p = load_params(args.params)
    cfg = training.check_config(dict(get(p, "train", dict)))
    cfg["seed"] = replicate_seed(cfg["seed"], args.rep)
    # Set here, not in params, so args.yaml and the checkpoint fingerprint record what was trained on.
    chans = shards.channels(layout.shards(args.shift))
    if cfg.setdefault("in_chans", chans) != chans:
        raise fail("train.in_chans", f"{cfg['in_chans']}, but data/shards/{args.shift} holds {chans}-channel images")
    run_distributed(cfg["nproc"], "stages.train", [args.shift, args.rep, "--params", args.params])
    rank, world = init_distributed()
    run = layout.run(args.shift, args.rep)
    out, ckpt_dir = layout.model(args.shift, args.rep), layout.checkpoints(f"{args.shift}/{args.rep}")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stats = read_json(layout.curated(args.shift) / "stats.json")
    counts = np.asarray(stats["count_per_class"])
    urls, sizes = shards.shard_urls(layout.shards(args.shift))
    resolved = {"shift": args.shift, "replicate": args.rep, "num_classes": int(len(counts)), "train": cfg,
                "samples": int(sum(sizes.values()))}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for f in out.glob("*"):
            f.unlink()
    if resolved["samples"] < world:
        # Only an empty shift (or one with fewer images than ranks) is skipped; a partial batch trains.
        if rank == 0:
            resolved["skipped"] = f"{resolved['samples']} samples for {world} rank(s)"
            training.write_skipped(out, resolved, layout.live(f"train_{run}"), layout.cost(f"train_{run}"))
            print(f"train@{run}: skipped ({resolved['skipped']})")
        return

    live = live_logger(f"train_{run}") if rank == 0 else None
    total = training.plan(cfg, resolved["samples"], world).steps

    def log(rec):
        if rec["step"] % 10 == 0 or rec["step"] == total:
            live.step = rec["step"]
            live.log_metric("train/loss", rec["loss"])
            live.log_metric("train/lr", rec["lr"])

    model, summary = training.train(urls, sizes, counts, cfg, ckpt_dir, log=log if live else None,
                                    rank=rank, world=world, stop_after=args.stop_after)
    if "stopped_at" in summary:
        print(f"train@{run}: stopped at step {summary['stopped_at']} (as asked)")
        return
    if rank == 0:
        resolved.update({k: summary[k] for k in ("steps", "steps_per_epoch", "class_weights", "final_loss")})
        training.save_model(out, model, resolved)
        live.summary = {"images_per_s": summary["images_per_s"], "final_loss": summary["final_loss"]}
        live.end()
        write_json(layout.cost(f"train_{run}"), {"wall_s": round(summary["wall_s"], 2),
                   "images_per_s": round(summary["images_per_s"], 1), "world": world, "steps": summary["steps"]})
        checkpoint.path(ckpt_dir).unlink(missing_ok=True)  # a finished run needs no resume point
        print(f"train@{run}: {summary['steps']} steps, {summary['images_per_s']:.0f} img/s, "
              f"final loss {summary['final_loss']:.3f}")
    finish_distributed(world)


if __name__ == "__main__":
    main()
