"""The `pool:` params section: its schema, defaults and the one-line errors for bad values."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from selectbench.core.errors import fail
from selectbench.core.layout import PROJECT
from selectbench.core.params import get
from selectbench.embedded.perturb import PERTURBATIONS

SOURCES = ("fmnist", "clipart", "emoji", "mnist")


def _schema() -> dict:
    """Key -> (kind, lo, hi) for every leaf of params.yaml `pool:`; nested dicts are sections."""
    rate = ((int, float), 0.0, 1.0)
    return {
        "seed": (int, 0, None),
        "workers": (int, 1, 64),
        "fmnist": {"n": (int, 0, None), "zipf_exponent": ((int, float), 0.0, 5.0)},
        "captions": {
            "wrong_class_rate": rate,
            "no_class_word_rate": rate,
            "several_classes_rate": rate,
            "sibling_share": rate,
            "synonym_rate": rate,
            "extra_word_rate": rate,
        },
        "perturb": {f"{k}_p": rate for k in PERTURBATIONS},
        "clipart": {"enabled": (bool, None, None), "root": (str, None, None), "max": (int, 0, None)},
        "emoji": {
            "enabled": (bool, None, None),
            "font": (str, None, None),
            "test_file": (str, None, None),
            "max": (int, 0, None),
        },
        "mnist": {"enabled": (bool, None, None), "n": (int, 0, 5000)},
        "crowd": {
            "coverage": rate,
            "generic_rate": rate,
            "fine_share": rate,
            "distractors_mean": ((int, float), 0.0, 20.0),
            "confusable_share": rate,
            "verification_rate": rate,
            "annotator_error_rate": rate,
        },
    }


def validate_cfg(cfg: Any) -> dict:
    """Check params.yaml `pool:` key by key; returns a plain nested dict of checked values."""
    if not isinstance(cfg, dict):
        raise fail("pool", f"expected a mapping, got {type(cfg).__name__}")
    wrapped = {"pool": cfg}

    def walk(schema: dict, node: Any, prefix: str) -> dict:
        if isinstance(node, dict):
            for k in node:
                if k not in schema:
                    raise fail(f"{prefix}.{k}", f"unknown key; allowed: {', '.join(schema)}")
        out = {}
        for k, spec in schema.items():
            dotted = f"{prefix}.{k}"
            if isinstance(spec, dict):
                sub = get(wrapped, dotted, dict)
                out[k] = walk(spec, sub, dotted)
            else:
                kind, lo, hi = spec
                v = get(wrapped, dotted, kind, lo=lo, hi=hi)
                out[k] = float(v) if kind == (int, float) else v
        return out

    out = walk(_schema(), cfg, "pool")
    c = out["captions"]
    noisy = c["wrong_class_rate"] + c["no_class_word_rate"] + c["several_classes_rate"]
    if noisy > 1.0 + 1e-12:
        raise fail(
            "pool.captions",
            f"wrong_class_rate + no_class_word_rate + several_classes_rate = {noisy:g} exceeds 1",
        )
    if out["clipart"]["enabled"] and not Path(out["clipart"]["root"]).is_dir():
        raise fail("pool.clipart.root", f"not a directory: {out['clipart']['root']}")
    if out["emoji"]["enabled"]:
        for key in ("font", "test_file"):
            if not Path(out["emoji"][key]).is_file():
                raise fail(f"pool.emoji.{key}", f"file not found: {out['emoji'][key]}")
    return out


def default_cfg() -> dict:
    """The defaults documented in docs/pool-params.yaml (used by tests as a template)."""
    with open(PROJECT / "docs" / "pool-params.yaml") as f:
        return yaml.safe_load(f)["pool"]
