"""The judges: models that score shifts and are never used to curate them.

- the **encoder** (self-supervised, SimCLR on base train images, no labels) embeds images for the
  SSL kNN guidance, CMMD and the label-noise estimate - the role of SELECT's fixed DINO encoder;
- the **classifier** (supervised on the base task) gives the class probabilities of the Inception
  Score analogue - the role of Inception-v3.

The embedded default trains both in the pipeline (`train_judge_encoder`, `train_judge_classifier`);
the full profile loads published timm weights from local files. A judge on disk is
model.safetensors (or a pointer to the published file) + config.json."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from selectbench.core.errors import UserError
from selectbench.core.runtime import flush_denormal
from selectbench.models.augment import augment
from selectbench.models.training import norm_stats, predict

ROLES = ("encoder", "classifier")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020): each of the 2N views must pick its partner among
    the other 2N - 1 by cosine similarity / temperature."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(-math.inf)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def _views(x: torch.Tensor, cfg: dict, gen: torch.Generator) -> torch.Tensor:
    """A random view of uint8 [N, C, H, W]: resized crop, flip, then brightness and contrast."""
    mean, std = norm_stats(x.shape[1])
    v = augment(x, cfg["img_size"], tuple(cfg["scale"]), 0.5, mean, std, gen)
    contrast = torch.empty(len(v), 1, 1, 1).uniform_(1 - cfg["jitter"], 1 + cfg["jitter"], generator=gen)
    bright = torch.empty(len(v), 1, 1, 1).uniform_(-cfg["jitter"], cfg["jitter"], generator=gen)
    return v * contrast + bright


def _model(name: str, num_classes: int, in_chans: int):
    import timm

    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)


def _loop(model, params, steps: int, lr: float, step_loss: Callable[[int], torch.Tensor],
          log: Callable[[int, float], None] | None, desc: str) -> None:
    """SGD with momentum, linear warm-up over the first 10% of steps, then cosine to 0."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    from tqdm import tqdm

    model.train()
    for step in tqdm(range(steps), desc=desc, unit="step", mininterval=2):
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None:
            log(step, float(loss.detach()))
    model.eval()


def train_encoder(images: np.ndarray, cfg: dict, log=None):
    """SimCLR on uint8 images [N, H, W] (grey) or [N, H, W, 3]; returns the backbone (pooled
    features, no head). The projection head is dropped after training, as in SimCLR."""
    flush_denormal()
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    x_all = _as_nchw(images)
    backbone = _model(cfg["model"], 0, x_all.shape[1])
    dim = backbone.num_features
    head = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, cfg["dim"]))

    def step_loss(step):
        idx = torch.randint(0, len(x_all), (cfg["batch_size"],), generator=gen)
        x = x_all[idx]
        z = head(backbone(torch.cat([_views(x, cfg, gen), _views(x, cfg, gen)])))
        return nt_xent(z[: len(idx)], z[len(idx):], cfg["temperature"])

    _loop(backbone, list(backbone.parameters()) + list(head.parameters()), cfg["steps"], cfg["lr"], step_loss, log,
          "judge encoder")
    return backbone


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, cfg: dict, log=None):
    """Supervised cross-entropy on the base task with crop + flip."""
    flush_denormal()
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    x_all = _as_nchw(images)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    model = _model(cfg["model"], num_classes, x_all.shape[1])
    mean, std = norm_stats(x_all.shape[1])

    def step_loss(step):
        idx = torch.randint(0, len(x_all), (cfg["batch_size"],), generator=gen)
        x = augment(x_all[idx], cfg["img_size"], tuple(cfg["scale"]), 0.5, mean, std, gen)
        return F.cross_entropy(model(x), y_all[idx])

    _loop(model, model.parameters(), cfg["steps"], cfg["lr"], step_loss, log, "judge classifier")
    return model


def _as_nchw(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images))
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def base_set(root: str | Path = ".") -> tuple[np.ndarray, np.ndarray]:
    """The base train images a judge learns from (rows of part 0: never in the pool) and their labels."""
    from selectbench.core import layout
    from selectbench.core.images import open_images

    train = layout.load_split(Path(root) / layout.TRAIN_SPLIT)
    rows = np.flatnonzero(train["part"] == 0)
    return np.asarray(open_images("train", root)[rows]), train["labels"][rows]


def settings(p: dict, role: str, in_chans: int, num_classes: int) -> dict:
    """The resolved config of judge `role` from params (judge.kind: trained | pretrained)."""
    from selectbench.core.errors import fail
    from selectbench.core.params import get

    if role not in ROLES:
        raise ValueError(f"role: expected one of {ROLES}, got {role!r}")
    kind = get(p, "judge.kind", str, choices=("trained", "pretrained"))
    if kind == "pretrained":
        key = f"judge.pretrained.{role}"
        weights = get(p, f"{key}.weights", str)
        if not Path(weights).is_file():
            raise fail(f"{key}.weights", f"file not found: {weights}")
        # A published classifier keeps its own head (e.g. ImageNet's 1,000 classes).
        return {"kind": kind, "role": role, "model": get(p, f"{key}.model", str), "weights": weights,
                "img_size": get(p, f"{key}.img_size", int, lo=8), "in_chans": 3,
                "num_classes": 0 if role == "encoder" else None}
    key = f"judge.{role}"
    c = get(p, key, dict)
    ints = {"steps": 1, "batch_size": 2, "img_size": 8, "seed": None} | ({"dim": 1} if role == "encoder" else {})
    for k, lo in ints.items():
        get(p, f"{key}.{k}", int, lo=lo)
    for k in ("lr",) + (("temperature", "jitter") if role == "encoder" else ()):
        get(p, f"{key}.{k}", float, lo=0.0)
    sc = get(p, f"{key}.scale", list)
    if not (len(sc) == 2 and 0 < sc[0] <= sc[1] <= 1):
        raise fail(f"{key}.scale", f"expected [lo, hi] with 0 < lo <= hi <= 1, got {sc!r}")
    return {"kind": kind, "role": role, "model": get(p, f"{key}.model", str), "img_size": c["img_size"],
            "in_chans": in_chans, "num_classes": 0 if role == "encoder" else num_classes, "params": c}


def save(model, config: dict, out: Path) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    write_config(config, out)


def write_config(config: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def prepare(p: dict, role: str, out: Path):
    """Train judge `role` from params into `out` (or point at its published weights there), then
    load it back: (model, config, base images, base labels), what the stage's quality check needs."""
    images, labels = base_set()
    classes = int(labels.max()) + 1
    cfg = settings(p, role, 1 if images.ndim == 3 else 3, classes)
    if cfg["kind"] == "trained":
        model = (train_encoder(images, cfg["params"]) if role == "encoder"
                 else train_classifier(images, labels, classes, cfg["params"]))
        save(model, cfg, out)
    else:
        write_config(cfg, out)
    model, cfg = load(out)
    return model, cfg, images, labels


def load(model_dir: str | Path):
    """(model in eval mode, config) of a judge directory."""
    import timm
    from safetensors.torch import load_file

    d = Path(model_dir)
    cfg_file = d / "config.json"
    if not cfg_file.exists():
        raise UserError(f"{d}: no judge here (config.json missing); run its train_judge_* stage")
    cfg = json.loads(cfg_file.read_text())
    if cfg["kind"] == "pretrained":
        extra = {} if cfg["num_classes"] is None else {"num_classes": cfg["num_classes"]}
        try:
            model = timm.create_model(cfg["model"], pretrained=True, in_chans=cfg["in_chans"],
                                      pretrained_cfg_overlay={"file": cfg["weights"]}, **extra)
        except (RuntimeError, OSError, ValueError) as e:
            raise UserError(f"judge {cfg['role']}: cannot load {cfg['model']} from {cfg['weights']}: "
                            f"{str(e).splitlines()[0]}") from None
    else:
        model = _model(cfg["model"], cfg["num_classes"], cfg["in_chans"])
        model.load_state_dict(load_file(d / "model.safetensors"))
    return model.eval(), cfg


def features(model, images, cfg: dict) -> np.ndarray:
    """Pooled features (encoder) or logits (classifier) with the eval transform."""
    return predict(model, images, {"img_size": cfg["img_size"], "in_chans": cfg["in_chans"]})


def probabilities(model, images, cfg: dict) -> np.ndarray:
    logits = features(model, images, cfg)
    if logits.size == 0:
        return logits
    return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
