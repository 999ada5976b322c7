"""One timm training recipe for every shift, streamed from WebDataset shards.

Resumable and deterministic on CPU: every source of randomness is a function of (seed, epoch,
step), so a run resumed from a checkpoint ends bitwise where an uninterrupted one does."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from selectbench.core import shards
from selectbench.core.errors import UserError, fail
from selectbench.core.io import write_json
from selectbench.core.runtime import all_threads, compute_device, flush_denormal
from selectbench.models import checkpoint
from selectbench.models.augment import augment

MEAN, STD = (0.2860,), (0.3530,)  # Fashion-MNIST pixel statistics
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, timm's default for RGB
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L")
WEIGHTINGS = ("none", "inverse_frequency", "effective_number")
KEYS = ("model", "img_size", "budget", "epochs", "steps", "batch_size", "opt", "lr", "momentum",
        "weight_decay", "sched", "warmup_epochs", "warmup_steps", "min_lr", "mixup", "cutmix", "label_smoothing",
        "scale", "hflip", "class_weighting", "effective_beta", "shuffle_buffer", "workers",
        "ckpt_every", "seed", "nproc")
OPTIONAL = ("in_chans",)
# Channels-last convolutions: a 28 px step 25% and prediction 40% faster on 2 CPU threads (measured);
# also what AMP convnets want on GPUs.
CL = torch.channels_last  # set by the train stage from the shards; absent (old args.yaml) means 1


@dataclass
class Run:
    steps: int
    steps_per_epoch: int
    samples: int


def check_config(cfg: dict) -> dict:
    """Validate train.* params up front; one line naming the key on any problem."""
    for k in KEYS:
        if k not in cfg:
            raise fail(f"train.{k}", "missing from params.yaml")
    unknown = sorted(set(cfg) - set(KEYS) - set(OPTIONAL))
    if unknown:
        raise fail(f"train.{unknown[0]}", f"unknown key; allowed: {', '.join(KEYS + OPTIONAL)}")
    chans = cfg.get("in_chans", 1)
    if type(chans) is not int or chans not in (1, 3):
        raise fail("train.in_chans", f"expected 1 (grey) or 3 (RGB), got {chans!r}")
    ints = {"img_size": 8, "batch_size": 1, "epochs": 0, "steps": 0, "warmup_steps": 0, "shuffle_buffer": 1, "workers": 0,
            "ckpt_every": 0, "nproc": 1, "seed": None}
    for k, lo in ints.items():
        v = cfg[k]
        if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo):
            raise fail(f"train.{k}", f"expected an integer >= {lo}, got {v!r}")
    for k in ("lr", "momentum", "weight_decay", "warmup_epochs", "min_lr", "mixup", "cutmix",
              "label_smoothing", "hflip", "effective_beta"):
        v = cfg[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise fail(f"train.{k}", f"expected a number >= 0, got {v!r}")
    if cfg["budget"] not in ("epochs", "steps"):
        raise fail("train.budget", f"unknown value {cfg['budget']!r}; allowed: epochs, steps")
    if cfg["class_weighting"] not in WEIGHTINGS:
        raise fail("train.class_weighting", f"unknown value {cfg['class_weighting']!r}; allowed: {', '.join(WEIGHTINGS)}")
    if not (isinstance(cfg["scale"], list) and len(cfg["scale"]) == 2 and 0 < cfg["scale"][0] <= cfg["scale"][1] <= 1):
        raise fail("train.scale", f"expected [lo, hi] with 0 < lo <= hi <= 1, got {cfg['scale']!r}")
    if not 0 <= cfg["effective_beta"] < 1:
        raise fail("train.effective_beta", f"must be in [0, 1), got {cfg['effective_beta']}")
    import timm

    if not timm.is_model(cfg["model"]):
        raise fail("train.model", f"unknown timm model {cfg['model']!r}")
    return cfg


def class_weights(counts: np.ndarray, mode: str, beta: float = 0.999) -> np.ndarray:
    """Per-class loss weights, mean 1 over present classes; absent classes get 0 (never NaN)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    if not present.any():
        return w
    if mode == "none":
        w[present] = 1.0
    elif mode == "inverse_frequency":
        w[present] = 1.0 / counts[present]
    elif mode == "effective_number":  # Cui et al. 2019: (1 - beta) / (1 - beta^n)
        w[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    else:
        raise UserError(f"train.class_weighting: unknown value {mode!r}; allowed: {', '.join(WEIGHTINGS)}")
    return w * present.sum() / w.sum()


def weighted_soft_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Soft-target cross-entropy (mixup/cutmix/smoothing targets) with per-class weights; each
    sample counts by the weight of its target mass, which reduces to weighted CE for hard labels."""
    nll = -(target * F.log_softmax(logits, dim=-1)).sum(-1)
    if weights is None:
        return nll.mean()
    w = target @ weights
    return (nll * w).sum() / w.sum().clamp_min(1e-12)


def plan(cfg: dict, samples: int, world: int = 1) -> Run:
    # The last partial batch is kept, so a shift smaller than one batch still trains.
    per_rank = samples // world
    steps_per_epoch = max(1, -(-per_rank // cfg["batch_size"]))
    steps = cfg["epochs"] * steps_per_epoch if cfg["budget"] == "epochs" else cfg["steps"]
    return Run(steps=steps, steps_per_epoch=steps_per_epoch, samples=samples)


def make_scheduler(optimizer, cfg: dict, run: Run):
    """The learning-rate schedule, stepped once per update. One recipe for every shift: with a step
    budget, warm-up (`warmup_steps`) and the cosine horizon (`steps`) are counted in steps, so the
    curve is the same whatever a shift's size; with an epoch budget (SELECT's), both are in epochs
    (`warmup_epochs`, `epochs`) and scale with the dataset, as SELECT's did."""
    from timm.scheduler import create_scheduler_v2

    if cfg["budget"] == "steps":
        units, warmup, per_unit = run.steps, cfg["warmup_steps"], 1
    else:
        units, warmup, per_unit = max(1, math.ceil(run.steps / run.steps_per_epoch)), cfg["warmup_epochs"], run.steps_per_epoch
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg["sched"], num_epochs=units, warmup_epochs=warmup,
                                       min_lr=cfg["min_lr"], warmup_lr=cfg["lr"] * 1e-3, step_on_epochs=False,
                                       updates_per_epoch=per_unit)
    return scheduler


def lr_curve(cfg: dict, samples: int, world: int = 1) -> list[float]:
    """The learning rate of each of a run's updates, as train() applies it."""
    run = plan(cfg, samples, world)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg["lr"])
    sched = make_scheduler(opt, cfg, run)
    out = []
    for step in range(run.steps):
        out.append(opt.param_groups[0]["lr"])
        sched.step_update(step + 1)
    return out


def norm_stats(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel: Fashion-MNIST's for grey, ImageNet's for RGB."""
    return (MEAN, STD) if in_chans == 1 else (RGB_MEAN, RGB_STD)


def _worker_seeded(fn: Callable, seed: int):
    """A pipeline stage whose RNG depends on (seed, worker id), not on process ids or time."""
    def stage(src):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        yield from fn(src, random.Random(seed * 1009 + wid))
    return stage


def _rank_split(rank: int, world: int):
    def stage(src):
        for i, s in enumerate(src):
            if i % world == rank:
                yield s
    return stage


class DecodeCache(dict):
    """Decoded images by sample key, kept across epochs while they fit in `budget` bytes: a small
    shift is seen ~6 times in 200 steps, and PNG decoding was a fifth of a 28 px step (measured)."""

    def __init__(self, budget: int = 1 << 30):
        super().__init__()
        self.left = budget

    def get_or(self, key: str, make):
        if key in self:
            return self[key]
        v = make()
        if self.left >= v[0].nbytes:
            self.left -= v[0].nbytes
            self[key] = v
        return v


def epoch_loader(urls: list[str], cfg: dict, epoch: int, rank: int = 0, world: int = 1,
                 cache: DecodeCache | None = None):
    """Stream one epoch of uint8 batches [B, C, H, W] + labels: shards shuffled per epoch, a shuffle
    buffer, decoding in `workers` processes (0: in this one, through `cache`). Augmentation runs on
    the batch."""
    import webdataset as wds
    from PIL import Image

    seed = cfg["seed"] * 100_003 + epoch
    order = list(urls)
    random.Random(seed).shuffle(order)
    buf = cfg["shuffle_buffer"]
    mode = "L" if cfg.get("in_chans", 1) == 1 else "RGB"

    def load(sample):
        return np.asarray(Image.open(io.BytesIO(shards.image_data(sample))).convert(mode)), int(sample["cls"])

    def decode(sample):
        if cache is None:
            return load(sample)
        return cache.get_or(f"{sample['__url__']}/{sample['__key__']}", lambda: load(sample))

    def collate(batch):
        imgs = [b[0] for b in batch]
        shape = imgs[0].shape
        if any(i.shape != shape for i in imgs):  # adapters write one size; resize a stray one to the first's
            imgs = [i if i.shape == shape else np.asarray(Image.fromarray(i).resize(shape[1::-1], Image.BILINEAR))
                    for i in imgs]
        x = torch.from_numpy(np.stack(imgs))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.tensor([b[1] for b in batch])

    pipeline = wds.DataPipeline(
        wds.SimpleShardList(order),
        wds.split_by_worker,
        shards.tar_samples,  # same samples as wds.tarfile_to_samples, 3x faster on small images
        _rank_split(rank, world),
        _worker_seeded(lambda src, rng: wds.filters._shuffle(src, buf, min(buf, 64), rng=rng), seed),
        wds.map(decode),
        wds.batched(cfg["batch_size"], collation_fn=collate, partial=True),
    )
    workers = min(cfg["workers"], len(order))
    return torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=workers, persistent_workers=False)


def fingerprint(cfg: dict, sizes: dict, num_classes: int) -> str:
    blob = json.dumps({"cfg": cfg, "sizes": sizes, "classes": num_classes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def train(urls: list[str], sizes: dict, counts: np.ndarray, cfg: dict, ckpt_dir: Path | None,
          log: Callable[[dict], None] | None = None, rank: int = 0, world: int = 1,
          stop_after: int | None = None):
    """Train cfg['model'] on the shards; returns (model, summary). stop_after simulates a kill."""
    from timm.data import Mixup
    from timm.optim import create_optimizer_v2

    flush_denormal()
    # One core per data worker, the rest to compute: oversubscribed OpenMP threads spin-wait,
    # which made 31 steps take 34 s instead of 3.4 s on 2 cores (measured). SELECT_THREADS caps it.
    torch.set_num_threads(max(1, (all_threads() - cfg["workers"]) // world))
    num_classes = len(counts)
    samples = int(sum(sizes.values()))
    run = plan(cfg, samples, world)
    torch.manual_seed(cfg["seed"])
    dev = compute_device(int(os.environ.get("LOCAL_RANK", rank)))
    model = new_model(cfg, num_classes).to(dev, memory_format=CL)
    optimizer = create_optimizer_v2(model, opt=cfg["opt"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                    momentum=cfg["momentum"])
    scheduler = make_scheduler(optimizer, cfg, run)
    mixup = None
    if cfg["mixup"] > 0 or cfg["cutmix"] > 0:
        mixup = Mixup(mixup_alpha=cfg["mixup"], cutmix_alpha=cfg["cutmix"], label_smoothing=cfg["label_smoothing"],
                      num_classes=num_classes)
    w = class_weights(counts, cfg["class_weighting"], cfg["effective_beta"])
    weights = None if cfg["class_weighting"] == "none" else torch.tensor(w, dtype=torch.float32, device=dev)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    fp = fingerprint(cfg, sizes, num_classes)
    step = epoch = skip = 0
    if ckpt_dir is not None:
        state = checkpoint.load(ckpt_dir, fp, "train")
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, epoch, skip = int(state["step"]), int(state["epoch"]), int(state["batch"])
            if rank == 0:
                print(f"resuming from step {step} (epoch {epoch}, batch {skip})", flush=True)
    model.train()
    t0, seen, last_loss = time.perf_counter(), 0, float("nan")
    from tqdm import tqdm

    bar = tqdm(total=run.steps, initial=step, desc="train", unit="step", disable=rank != 0, mininterval=2)
    cache = DecodeCache() if cfg["workers"] == 0 else None  # worker processes would each hold a copy, per epoch
    while step < run.steps:
        batch_in_epoch = 0
        start = step
        for x, y in epoch_loader(urls, cfg, epoch, rank, world, cache):
            if batch_in_epoch < skip:  # replay the data stream up to the checkpoint, without compute
                batch_in_epoch += 1
                continue
            skip = 0
            torch.manual_seed(cfg["seed"] * 1_000_003 + step)
            np.random.seed((cfg["seed"] * 1_000_003 + step) % 2**32)  # timm Mixup draws from numpy
            gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + step)
            x = augment(x.to(dev, non_blocking=True), cfg["img_size"], tuple(cfg["scale"]), cfg["hflip"],
                        *norm_stats(cfg.get("in_chans", 1)), gen).contiguous(memory_format=CL)
            y = torch.as_tensor(y).to(dev)
            if mixup is not None and len(x) % 2 == 0:
                x, target = mixup(x, y)
            else:
                target = F.one_hot(y, num_classes).float()
                if cfg["label_smoothing"] > 0:
                    target = target * (1 - cfg["label_smoothing"]) + cfg["label_smoothing"] / num_classes
            loss = weighted_soft_ce(ddp_model(x), target, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            batch_in_epoch += 1
            scheduler.step_update(step)
            seen += len(x) * world
            last_loss = float(loss.detach())
            bar.update(1)
            if log is not None and rank == 0:
                log({"step": step, "loss": last_loss, "lr": optimizer.param_groups[0]["lr"], "epoch": epoch})
            # No checkpoint at the last step: resuming from it would run no step, so the summary
            # (final_loss in args.yaml) of a run killed before the stage wrote its model came out NaN.
            if (ckpt_dir is not None and rank == 0 and cfg["ckpt_every"] and step % cfg["ckpt_every"] == 0
                    and step < run.steps):
                checkpoint.save(ckpt_dir, fp, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                step=step, epoch=epoch, batch=batch_in_epoch)
            if stop_after is not None and step >= stop_after:
                bar.close()
                return model.cpu(), {"stopped_at": step}
            if step >= run.steps or batch_in_epoch >= run.steps_per_epoch:
                break
        if step == start and not skip:
            raise RuntimeError(f"epoch {epoch} yielded no batch on rank {rank}: the shards hold no samples for it")
        skip = 0  # a checkpoint at an epoch's last batch replays that whole epoch, not the next one too
        epoch += 1
    bar.close()
    wall = time.perf_counter() - t0
    return model.cpu(), {"steps": run.steps, "steps_per_epoch": run.steps_per_epoch, "samples": samples,
                   "epochs_seen": epoch, "final_loss": last_loss, "class_weights": w.tolist(),
                   "images_per_s": seen / max(wall, 1e-9), "wall_s": wall, "world": world}


def save_model(out: Path, model, resolved: dict) -> None:
    """The model contract: model.safetensors + args.yaml (the resolved config it was trained with)."""
    import yaml
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    with open(out / "args.yaml", "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=True)


def new_model(cfg: dict, num_classes: int):
    """cfg's untrained network; its initial weights come from torch's current seed."""
    import timm

    return timm.create_model(cfg["model"], pretrained=False, num_classes=num_classes, in_chans=cfg.get("in_chans", 1))


def load_model(model_dir: str | Path):
    """The trained classifier from model.safetensors + args.yaml (no pickle involved)."""
    import yaml
    from safetensors.torch import load_file

    d = Path(model_dir)
    with open(d / "args.yaml") as f:
        args = yaml.safe_load(f)
    if not (d / "model.safetensors").exists():
        return None, args
    model = new_model(args["train"], args["num_classes"])
    model.load_state_dict(load_file(d / "model.safetensors"))
    return model.to(compute_device(), memory_format=CL).eval(), args


def model_input(images, size: int, in_chans: int, antialias: bool) -> torch.Tensor:
    """Normalised float [N,in_chans,size,size] from uint8 [N,H,W] (grey) or [N,H,W,3] (RGB) images.

    Grey images feed an RGB model as three equal channels; RGB ones feed a grey model as luma."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[1] < in_chans:
        x = x.expand(-1, in_chans, -1, -1)
    elif x.shape[1] > in_chans:
        x = (x * torch.tensor(GREY_WEIGHTS).view(3, 1, 1)).sum(1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    mean, std = norm_stats(in_chans)
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


PREDICT_BATCH = 1024  # images per forward pass; evaluate's unit of work over ranks, so never world-dependent


@torch.no_grad()
def predict(model, images, cfg: dict, batch: int = PREDICT_BATCH) -> np.ndarray:
    """Logits for uint8 [N,H,W] or [N,H,W,3] images with the eval transform (resize to img_size, normalise).

    images is anything with len() and slicing (an array, a memmap, a lazy loader): only one
    batch is ever decoded, so a large RGB set need not fit in memory."""
    flush_denormal()
    size, chans = cfg["img_size"], cfg.get("in_chans", 1)
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        x = model_input(images[i:i + batch], size, chans, antialias=True).to(dev, memory_format=CL)
        out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def write_skipped(out: Path, resolved: dict, live_dir: Path, cost: Path) -> None:
    """The outputs of a shift too small for one batch: an args.yaml saying why, an empty live log
    and a cost record, so DVC gets every declared output and the report says "not trained"."""
    import yaml

    with open(out / "args.yaml", "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=True)
    write_json(live_dir / "metrics.json", {"skipped": True})
    (live_dir / "plots/metrics/train").mkdir(parents=True, exist_ok=True)
    (live_dir / "plots/metrics/train/loss.tsv").write_text("step\tloss\n")
    write_json(cost, {"wall_s": 0.0, "skipped": True})
