"""train@<shift>: the shared timm recipe on data/shards/<shift> -> models/<shift>/{model.safetensors, args.yaml}.

With train.nproc > 1 it relaunches itself under torchrun (DDP: gloo on CPU, NCCL on GPU).
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from selectbench.core import shards
from selectbench.core.errors import UserError, fail
from selectbench.core.io import read_json, write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import stage_main
from selectbench.models import training


def _distributed():
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":  # each rank on its own GPU before NCCL starts (torchrun sets LOCAL_RANK)
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    dist.init_process_group(backend)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.get_world_size()))
    return dist.get_rank(), dist.get_world_size()


def _channels(shift: str) -> int:
    """Image channels of the shards; 1 for shards written before the shard stage recorded it."""
    path = Path(f"data/shards/{shift}/summary.json")
    chans = read_json(path).get("channels", 1) if path.exists() else 1
    if chans not in (1, 3):
        raise UserError(f"{path}: channels must be 1 or 3, got {chans!r}")
    return chans


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
    chans = _channels(args.shift)
    if cfg.setdefault("in_chans", chans) != chans:
        raise fail("train.in_chans", f"{cfg['in_chans']}, but data/shards/{args.shift} holds {chans}-channel images")
    if cfg["nproc"] > 1 and "RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cfg['nproc']}",
               "-m", "stages.train", args.shift, "--params", args.params]
        raise SystemExit(subprocess.call(cmd))
    rank, world = _distributed()
    out = Path(f"models/{args.shift}")
    ckpt_dir = Path(f"checkpoints/{args.shift}")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stats = read_json(f"data/curated/{args.shift}/stats.json")
    counts = np.asarray(stats["count_per_class"])
    urls, sizes = shards.shard_urls(f"data/shards/{args.shift}")
    resolved = {"shift": args.shift, "num_classes": int(len(counts)), "train": cfg, "samples": int(sum(sizes.values()))}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for f in out.glob("*"):
            f.unlink()
    if resolved["samples"] < cfg["batch_size"] * world:
        # Documented behaviour: a shift too small for one batch is skipped explicitly, not crashed on.
        if rank == 0:
            resolved["skipped"] = f"{resolved['samples']} samples < one batch of {cfg['batch_size'] * world}"
            with open(out / "args.yaml", "w") as f:
                yaml.safe_dump(resolved, f, sort_keys=True)
            live_dir = Path(f"reports/live/train_{args.shift}")
            write_json(live_dir / "metrics.json", {"skipped": True})
            (live_dir / "plots/metrics/train").mkdir(parents=True, exist_ok=True)
            (live_dir / "plots/metrics/train/loss.tsv").write_text("step\tloss\n")
            write_json(f"reports/cost/train_{args.shift}.json", {"wall_s": 0.0, "skipped": True})
            print(f"train@{args.shift}: skipped ({resolved['skipped']})")
        return
    from dvclive import Live

    live = Live(f"reports/live/train_{args.shift}", dvcyaml=False, save_dvc_exp=False, report=None) if rank == 0 else None

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
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
        resolved.update({k: summary[k] for k in ("steps", "steps_per_epoch", "class_weights", "final_loss")})
        with open(out / "args.yaml", "w") as f:
            yaml.safe_dump(resolved, f, sort_keys=True)
        live.summary = {"images_per_s": summary["images_per_s"], "final_loss": summary["final_loss"]}
        live.end()
        write_json(f"reports/cost/train_{args.shift}.json", {"wall_s": round(summary["wall_s"], 2),
                   "images_per_s": round(summary["images_per_s"], 1), "world": world, "steps": summary["steps"]})
        (ckpt_dir / "last.pt").unlink(missing_ok=True)  # a finished run needs no resume point
        print(f"train@{args.shift}: {summary['steps']} steps, {summary['images_per_s']:.0f} img/s, "
              f"final loss {summary['final_loss']:.3f}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
