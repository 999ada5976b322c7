"""params.yaml: loading, the typed reader every stage uses, and the validator of every key
(unknown keys, with the closest known one; profiles merged by `--apply`)."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from selectbench.core.errors import UserError, fail
from selectbench.core.io import atomic_path


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError(f"params file not found: {p}")
    with open(p) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise UserError(f"{p}: expected a mapping at top level")
    return params


def get(params: dict, dotted: str, kind: type | tuple | None = None, *, lo=None, hi=None, choices=None):
    """Read params[dotted] with a one-line error naming the key on any problem."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise fail(dotted, "missing from params.yaml")
        node = node[part]
    if kind is not None:
        ok = isinstance(node, kind) and not (isinstance(node, bool) and bool not in _as_tuple(kind))
        if kind in (float, (int, float)) and isinstance(node, int) and not isinstance(node, bool):
            ok = True
        if not ok:
            names = "/".join(k.__name__ for k in _as_tuple(kind))
            raise fail(dotted, f"expected {names}, got {type(node).__name__} {node!r}")
    if choices is not None and node not in choices:
        raise fail(dotted, f"unknown value {node!r}; allowed: {', '.join(map(str, choices))}")
    if lo is not None and node < lo:
        raise fail(dotted, f"must be >= {lo}, got {node!r}")
    if hi is not None and node > hi:
        raise fail(dotted, f"must be <= {hi}, got {node!r}")
    return node


def replicates(params: dict) -> list[str]:
    """The `replicates:` names: each trains and evaluates every shift with seeds derived from it."""
    reps = get(params, "replicates", list)
    bad = [r for r in reps if not (isinstance(r, str) and r.replace("_", "").isalnum())]
    if not reps or bad or len(set(reps)) != len(reps):
        raise fail("replicates", f"expected a non-empty list of distinct names (letters, digits, _), got {reps!r}")
    return reps


class Section:
    """One params section behind the typed reader: `cfg.get("seed", int)` reads `<key>.seed`, and
    every error names the full dotted key. A strategy receives its shift's section; the one shared
    key a shift declares in `uses:` is read through `shared`."""

    def __init__(self, params: dict, key: str):
        self.params, self.key = params, key
        self.raw: dict = get(params, key, dict)

    def get(self, name: str, kind: type | tuple | None = None, **limits):
        return get(self.params, f"{self.key}.{name}", kind, **limits)

    def opt(self, name: str, default=None):
        """An optional key's raw value (checked by the caller)."""
        return self.raw.get(name, default)

    def sub(self, name: str) -> "Section":
        return Section(self.params, f"{self.key}.{name}")

    def shared(self, dotted: str, kind: type | tuple | None = None, **limits):
        return get(self.params, dotted, kind, **limits)


def _as_tuple(kind):
    return kind if isinstance(kind, tuple) else (kind,)


def profile(params: dict) -> str:
    """`embedded` (the default, also when the key is absent) or `full`."""
    v = params.get("profile", "embedded")
    if v not in ("embedded", "full"):
        raise fail("profile", f"unknown value {v!r}; allowed: embedded, full")
    return v


KEYS_FILE = Path(__file__).with_name("params_keys.yaml")
DEFAULT_FILES = ("params.yaml", "params-full.yaml")
# Passed through to open_clip / diffusers, which know their own keys.
OPEN = ("embedder.arch.vision_cfg", "embedder.arch.text_cfg", "generator.unet")
# Read for any strategy by selectbench.curation.run.
GENERIC_SHIFT_KEYS = ("strategy", "uses", "per_class_cap", "rebalance", "semdedup", "clean", "subsample", "shuffle_labels")


def _tree(node: Any, prefix: str) -> Any:
    if prefix in OPEN or not isinstance(node, dict):
        return None
    return {k: _tree(v, f"{prefix}.{k}" if prefix else k) for k, v in sorted(node.items())}


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge(a.get(k), b.get(k)) if k in a and k in b else a.get(k, b.get(k))
                for k in sorted(set(a) | set(b))}
    return a if a is not None else b


def derive_keys(defaults: list[dict]) -> dict:
    """{sections: key tree (leaves None), strategies: {strategy: shift keys}, rebalance: key tree}."""
    sections: dict = {}
    strategies: dict[str, set] = {}
    rebalance: dict = {}
    for p in defaults:
        shifts = p.get("shifts") or {}
        sections = _merge(sections, _tree({k: v for k, v in p.items() if k != "shifts"}, ""))
        for cfg in shifts.values():
            strategies.setdefault(cfg["strategy"], set()).update(set(cfg) | set(GENERIC_SHIFT_KEYS))
            if isinstance(cfg.get("rebalance"), dict):
                rebalance = _merge(rebalance, _tree(cfg["rebalance"], "rebalance"))
    sections["shifts"] = None
    return {"sections": dict(sorted(sections.items())),
            "strategies": {s: sorted(k) for s, k in sorted(strategies.items())},
            "rebalance": rebalance}


def derive_keys_from(root: str | Path) -> dict:
    defaults = []
    for name in DEFAULT_FILES:
        with open(Path(root) / name) as f:
            defaults.append(yaml.safe_load(f) or {})
    return derive_keys(defaults)


def write_keys(keys: dict, path: str | Path = KEYS_FILE) -> None:
    with open(path, "w") as f:
        f.write("# Known params.yaml keys, derived from params.yaml and params-full.yaml.\n"
                "# Generated by `python -m stages.check_params --write-keys`; do not edit by hand.\n")
        yaml.safe_dump(keys, f, sort_keys=False, default_flow_style=None, width=100)


def load_keys(path: str | Path = KEYS_FILE) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _unknown(dotted: str, known: list[str], what: str = "unknown key") -> UserError:
    *head, last = dotted.split(".")
    close = difflib.get_close_matches(last, known, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {'.'.join([*head, close[0]])}?"
    else:
        hint = f"known here: {', '.join(known)}"
    return fail(dotted, f"{what}; {hint}")


def _walk(node: Any, tree: Any, prefix: str) -> None:
    if tree is None:  # a leaf (any value) or an open mapping
        return
    if not isinstance(node, dict):
        raise fail(prefix, f"expected a mapping of {', '.join(tree)}, got {type(node).__name__} {node!r}")
    for k, v in node.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if k not in tree:
            raise _unknown(dotted, list(tree), "unknown key" if prefix else "unknown section")
        _walk(v, tree[k], dotted)


def check(params: dict, keys: dict | None = None) -> None:
    """Raise UserError (one line, naming the key) for the first unknown key in params."""
    keys = keys or load_keys()
    _walk(params, keys["sections"], "")
    shifts = params.get("shifts")
    if shifts is None:
        return
    if not isinstance(shifts, dict):
        raise fail("shifts", f"expected a mapping of shift name -> settings, got {type(shifts).__name__}")
    for name, cfg in shifts.items():
        where = f"shifts.{name}"
        if not isinstance(cfg, dict):
            raise fail(where, f"expected a mapping with a strategy, got {type(cfg).__name__} {cfg!r}")
        allowed = keys["strategies"].get(cfg.get("strategy"))
        if allowed is None:  # a strategy the defaults do not use: curate checks its name and keys
            continue
        for k in cfg:
            if k not in allowed:
                raise _unknown(f"{where}.{k}", allowed, f"unknown key for strategy {cfg['strategy']}")
        if isinstance(cfg.get("rebalance"), dict):
            _walk(cfg["rebalance"], keys["rebalance"], f"{where}.rebalance")


def apply_profile(profile_path: str | Path, params_path: str | Path) -> int:
    """Merge a profile file's values (params-full.yaml) into params.yaml, key by key, keeping
    params.yaml's comments and order; returns how many leaf values were set."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.width = 120
    for p in (profile_path, params_path):
        if not Path(p).is_file():
            raise UserError(f"{p}: file not found")
    with open(profile_path) as f:
        profile = rt.load(f) or {}
    with open(params_path) as f:
        params = rt.load(f)
    count = 0

    def merge(dst, src) -> None:
        nonlocal count
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = v
                count += 1

    merge(params, profile)
    with atomic_path(params_path) as tmp, open(tmp, "w") as f:
        rt.dump(params, f)
    return count
