"""The CLIP embedder: a small open_clip model trained on the pool (embedded default), or a
pretrained open_clip model (full profile). One interface for both."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .common import UserError, flush_denormal

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


def images_to_tensor(images: np.ndarray, size: int = 32) -> torch.Tensor:
    """uint8 [B,28,28] -> normalised float [B,3,size,size] (zero-padded, grey replicated)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    pad = (size - x.shape[-1]) // 2
    if pad > 0:
        x = F.pad(x, (pad, size - x.shape[-1] - pad, pad, size - x.shape[-2] - pad))
    x = (x - MEAN) / STD
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def tokenize(texts: list[str], context_length: int) -> torch.Tensor:
    import open_clip

    return open_clip.tokenize(list(texts), context_length=context_length)


class Embedder:
    """Encodes images and texts into one normalised space; exposes token states for the generator."""

    def __init__(self, model: torch.nn.Module, context_length: int, image_size: int = 32):
        flush_denormal()
        self.model = model.eval()
        self.context_length = context_length
        self.image_size = image_size

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, batch: int = 1024, desc: str | None = None) -> np.ndarray:
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i in tqdm(range(0, len(images), batch), desc=desc, disable=desc is None, unit="batch"):
            x = images_to_tensor(images[i:i + batch], self.image_size)
            out[i:i + batch] = F.normalize(self.model.encode_image(x), dim=-1).numpy()
        return out

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch: int = 1024, desc: str | None = None) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i in tqdm(range(0, len(texts), batch), desc=desc, disable=desc is None, unit="batch"):
            tok = tokenize(texts[i:i + batch], self.context_length)
            out[i:i + batch] = F.normalize(self.model.encode_text(tok), dim=-1).numpy()
        return out

    @torch.no_grad()
    def text_hidden(self, texts: list[str]) -> torch.Tensor:
        """Token-level text states [B, L, W], the cross-attention input Stable Diffusion uses."""
        m = self.model
        tok = tokenize(texts, self.context_length)
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
    """Full profile: a named open_clip architecture with a local weights file (no hub access)."""
    import open_clip

    if weights and not Path(weights).exists():
        raise UserError(f"embedder.weights: file not found: {weights}")
    try:
        model = open_clip.create_model(model_name, pretrained=weights)
    except RuntimeError as e:
        raise UserError(f"embedder.model: {e}") from None
    ctx = model.context_length if hasattr(model, "context_length") else 77
    size = model.visual.image_size[0] if hasattr(model.visual, "image_size") else 224
    return Embedder(model, ctx, size)
