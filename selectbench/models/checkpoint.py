"""The one checkpoint format of the trainers (shift classifier, diffusion model): a single file
`<dir>/last.pt`, written atomically and loaded with weights_only=True, holding weights, optimizer
state, counters and a fingerprint of the config and data. A checkpoint that is unreadable or was
written for another fingerprint is ignored with a warning, so a run starts fresh rather than
resuming someone else's state."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from selectbench.core.io import atomic_path

NAME = "last.pt"


def path(ckpt_dir: str | Path) -> Path:
    return Path(ckpt_dir) / NAME


def save(ckpt_dir: str | Path, fingerprint: str, **state) -> Path:
    """state: tensors, state dicts, ints and strings only (what weights_only loading accepts)."""
    out = path(ckpt_dir)
    with atomic_path(out) as tmp:
        torch.save({**state, "fingerprint": fingerprint}, tmp)
    return out


def load(ckpt_dir: str | Path, fingerprint: str, who: str) -> dict | None:
    """The saved state if it belongs to this exact config and data, else None (start fresh)."""
    p = path(ckpt_dir)
    if not p.exists():
        return None
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or tampered file must not stop a fresh start
        print(f"{who}: ignoring unreadable checkpoint {p}: {e.__class__.__name__}", file=sys.stderr, flush=True)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        print(f"{who}: ignoring checkpoint {p} from another configuration", file=sys.stderr, flush=True)
        return None
    return state
