"""The CLIP embedder: a small open_clip model trained on the pool (embedded default), or a
pretrained open_clip model (full profile). One interface for both."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from selectbench.core.errors import UserError
from selectbench.core.runtime import compute_device, flush_denormal

# Sized for a ~1 minute CPU budget: a ViT tower was 30x slower per step on 2 cores than timm's
# small test_resnet; 32 px = 28 px padded. Captions are short, so 24 tokens suffice.
DEFAULT_ARCH = {
    "embed_dim": 64,
    "vision_cfg": {"timm_model_name": "test_resnet", "timm_pool": "avg", "timm_proj": "linear", "image_size": 32},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics


def build(arch: dict) -> torch.nn.Module:
    from open_clip.model import CLIP

    return CLIP(arch["embed_dim"], arch["vision_cfg"], arch["text_cfg"])


def images_to_tensor(images: np.ndarray, size: int = 32, mean: tuple | None = None,
                     std: tuple | None = None) -> torch.Tensor:
    """uint8 grey [B,h,w] or RGB [B,h,w,3] -> normalised float [B,3,size,size].

    Without mean/std (the trained embedder) grey images are zero-padded to size, as in training,
    and normalised with the Fashion-MNIST statistics. A pretrained model passes its own per-channel
    mean/std: it was trained on whole RGB images, so grey is replicated to RGB and resized instead.
    RGB images are resized to size (callers give centre squares) and normalised per channel, with
    the Fashion-MNIST statistics replicated when no mean/std is given.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if x.ndim == 3 and mean is None:
        pad = (size - x.shape[-1]) // 2
        if pad > 0:
            x = F.pad(x, (pad, size - x.shape[-1] - pad, pad, size - x.shape[-2] - pad))
        x = (x - MEAN) / STD
        return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    if x.ndim == 3:
        x = x.unsqueeze(-1).expand(-1, -1, -1, 3)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [B,H,W] or [B,H,W,3], got shape {tuple(images.shape)}")
    x = x.permute(0, 3, 1, 2)
    if x.shape[-2:] != (size, size):
        # Clamped: bicubic overshoots, and a PIL resize of the uint8 image (open_clip's own
        # preprocessing) would saturate at 0 and 255.
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    m = torch.tensor(mean if mean is not None else (MEAN,) * 3).view(1, 3, 1, 1)
    s = torch.tensor(std if std is not None else (STD,) * 3).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


def tokenize(texts: list[str], context_length: int) -> torch.Tensor:
    import open_clip

    return open_clip.tokenize(list(texts), context_length=context_length)


class Embedder:
    """Encodes images and texts into one normalised space; exposes token states for the generator."""

    def __init__(self, model: torch.nn.Module, context_length: int, image_size: int = 32,
                 mean: tuple | None = None, std: tuple | None = None, device: str | torch.device = "cpu"):
        """mean/std: a pretrained model's per-channel normalisation; None for the trained embedder
        (see images_to_tensor). device: where the model runs; outputs are always numpy on cpu."""
        flush_denormal()
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.context_length = context_length
        self.image_size = image_size
        self.mean, self.std = mean, std

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @torch.no_grad()
    def encode_images(self, images, batch: int = 1024, desc: str | None = None) -> np.ndarray:
        """images: uint8 [N,H,W] or [N,H,W,3], or anything with len() and slicing (a lazy loader:
        only one batch is held at a time)."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i in tqdm(range(0, len(images), batch), desc=desc, disable=desc is None, unit="batch"):
            x = images_to_tensor(np.asarray(images[i:i + batch]), self.image_size, self.mean, self.std)
            out[i:i + batch] = F.normalize(self.model.encode_image(x.to(self.device)), dim=-1).float().cpu().numpy()
        return out

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch: int = 1024, desc: str | None = None) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i in tqdm(range(0, len(texts), batch), desc=desc, disable=desc is None, unit="batch"):
            tok = tokenize(texts[i:i + batch], self.context_length).to(self.device)
            out[i:i + batch] = F.normalize(self.model.encode_text(tok), dim=-1).float().cpu().numpy()
        return out

    @torch.no_grad()
    def text_hidden(self, texts: list[str]) -> torch.Tensor:
        """Token-level text states [B, L, W], the cross-attention input Stable Diffusion uses."""
        m = self.model
        tok = tokenize(texts, self.context_length).to(self.device)
        x = m.token_embedding(tok) + m.positional_embedding
        x = m.transformer(x, attn_mask=m.attn_mask)
        return m.ln_final(x)


def train(images: np.ndarray, captions: list[str], arch: dict, *, steps: int, batch_size: int, lr: float,
          seed: int, log: Callable[[int, float], None] | None = None) -> torch.nn.Module:
    """Contrastive (CLIP) training; batches drawn by a seeded generator so runs are repeatable."""
    from open_clip.loss import ClipLoss

    if len(images) != len(captions) or len(images) < 2:
        raise UserError(f"embedder: need >= 2 image-caption pairs, got {len(images)} images / {len(captions)} captions")
    flush_denormal()
    torch.manual_seed(seed)
    model = build(arch)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(seed)
    ctx = arch["text_cfg"]["context_length"]
    tokens = tokenize(captions, ctx)
    bs = min(batch_size, len(images))
    for step in tqdm(range(steps), desc="train_embedder", unit="step"):
        idx = torch.randperm(len(images), generator=gen)[:bs].numpy()
        img_f, txt_f, scale = model(images_to_tensor(images[idx]), tokens[idx])
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None:
            log(step, float(loss.detach()))
    return model.eval()


def save(model: torch.nn.Module, arch: dict, out_dir: str | Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    with open(out / "config.json", "w") as f:
        json.dump({"kind": "trained", "arch": arch, **(extra or {})}, f, indent=2, sort_keys=True)


def load(model_dir: str | Path) -> Embedder:
    from safetensors.torch import load_file

    d = Path(model_dir)
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise UserError(f"{d}: no embedder config.json (run the train_embedder stage first)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("kind") == "pretrained":
        return load_pretrained(cfg["model"], cfg.get("weights"))
    model = build(cfg["arch"])
    model.load_state_dict(load_file(d / "model.safetensors"))
    return Embedder(model, cfg["arch"]["text_cfg"]["context_length"], cfg["arch"]["vision_cfg"]["image_size"])


def load_pretrained(model_name: str, weights: str | None) -> Embedder:
    """Full profile: an open_clip architecture with a local weights file (no hub access).

    model_name is a built-in open_clip name or the path of a model-config JSON (the format of
    open_clip's model_configs/*.json), registered under its file stem."""
    import open_clip

    if model_name.endswith(".json"):
        model_name = _register_config(Path(model_name))
    if weights and not Path(weights).is_file():
        raise UserError(f"embedder.weights: file not found: {weights}")
    # create_model warns "initialized randomly": the weights are loaded below, by _load_weights.
    prev = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model(model_name)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"embedder.model: {model_name}: {_one_line(e)}") from None
    finally:
        logging.disable(prev)
    if weights:
        _load_weights(model, Path(weights))
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    pp = getattr(model.visual, "preprocess_cfg", {})
    mean, std = tuple(pp.get("mean", OPENAI_DATASET_MEAN)), tuple(pp.get("std", OPENAI_DATASET_STD))
    ctx = model.context_length if hasattr(model, "context_length") else 77
    size = model.visual.image_size[0] if hasattr(model.visual, "image_size") else 224
    return Embedder(model, ctx, size, mean, std, device=compute_device())


def _one_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _register_config(path: Path) -> str:
    import open_clip

    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"embedder.model: cannot read {path} ({e.strerror})") from None
    except ValueError as e:
        raise UserError(f"embedder.model: {path}: not JSON ({e})") from None
    # open_clip skips a config without these keys silently and then reports the name unknown.
    need = ("embed_dim", "vision_cfg", "text_cfg")
    if not isinstance(cfg, dict) or not all(k in cfg for k in need):
        raise UserError(f"embedder.model: {path}: an open_clip model config needs keys {', '.join(need)}")
    open_clip.add_model_config(path)
    return path.stem


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    """Safetensors or torch.load(weights_only=True), never a full unpickle: open_clip 3.3 retries a
    file whose weights-only read raised TypeError with torch.load's default, which the environment
    (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) can turn into a full unpickle."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or unsafe file: any reader error is the user's to fix
        raise UserError(f"embedder.weights: {path}: cannot load ({type(e).__name__}: {_one_line(e)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # an open_clip training checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"embedder.weights: {path}: not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DistributedDataParallel
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = sorted(k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        first = (missing or unexpected or shapes)[0]
        raise UserError(f"embedder.weights: {path}: does not match the architecture ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(shapes)} wrong-shape tensors, e.g. {first})")
    model.load_state_dict(state)
