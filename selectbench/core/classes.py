"""The class list (data/meta/classes.yaml): the one reader of every class fact - names, the words a
caption may use for a class, definitions, wnids, and the visually confusable groups."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import yaml

from selectbench.core.errors import UserError
from selectbench.core.layout import CLASSES


def mention_pattern(words) -> str:
    """Whole-word alternation; hyphens count as word characters so "t-shirt" does not also mention
    "shirt". Longest words first, so a longer synonym wins over its prefix."""
    alts = "|".join(re.escape(w.lower()) for w in sorted(set(words), key=len, reverse=True))
    return r"(?<![\w-])(?:" + alts + r")(?![\w-])"


@dataclass(frozen=True)
class Classes:
    # Derived facts are cached on first use: the pool simulation reads them once per caption.
    entries: tuple[dict, ...]
    groups: tuple[tuple[str, ...], ...] = ()

    @cached_property
    def names(self) -> list[str]:
        return [str(e["name"]) for e in self.entries]

    @cached_property
    def synonyms(self) -> list[list[str]]:
        return [[str(s) for s in (e.get("synonyms") or [e["name"]])] for e in self.entries]

    @cached_property
    def patterns(self) -> tuple[re.Pattern, ...]:
        return tuple(re.compile(mention_pattern(s), re.IGNORECASE) for s in self.synonyms)

    @cached_property
    def siblings(self) -> list[list[int]]:
        """Per class, the other classes of its confusable group (empty where it has none)."""
        index = {n: i for i, n in enumerate(self.names)}
        out: list[list[int]] = [[] for _ in self.entries]
        for group in self.groups:
            ids = [index[n] for n in group if n in index]
            for i in ids:
                out[i] = [j for j in ids if j != i]
        return out

    @cached_property
    def confusable(self) -> set[str]:
        """Classes that belong to a confusable (fine-grained) group (checked to be known at load)."""
        return {n for g in self.groups for n in g}

    def __len__(self) -> int:
        return len(self.entries)

    def mentioned(self, caption: str) -> set[int]:
        return {c for c, p in enumerate(self.patterns) if p.search(caption)}

    def mentions(self, captions) -> np.ndarray:
        return mentions(captions, self.synonyms)


def mentions(captions, synonyms: list[list[str]]) -> np.ndarray:
    """[N, C] bool: caption i names class c (the name or a synonym, whole words only)."""
    import pandas as pd

    s = pd.Series(list(captions), dtype="string").str.lower()
    out = np.zeros((len(s), len(synonyms)), dtype=bool)
    for c, words in enumerate(synonyms):
        out[:, c] = s.str.contains(mention_pattern(words), regex=True).fillna(False).to_numpy(dtype=bool)
    return out


def load(root: str | Path = ".", path: str | Path | None = None) -> Classes:
    """The classes of `root`/data/meta/classes.yaml (or of `path`), read once per file version."""
    p = Path(path) if path is not None else Path(root) / CLASSES
    if not p.exists():
        raise UserError(f"{p}: class list not found")
    return _load(p.resolve(), p.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _load(path: Path, _mtime: int) -> Classes:
    with open(path) as f:
        doc = yaml.safe_load(f)
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if not entries:
        raise UserError(f"{path}: no classes")
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "name" not in e:
            raise UserError(f"{path}: class {i} has no name")
    groups = tuple(tuple(str(n) for n in g) for g in (doc.get("confusable_groups") or []))
    names = {str(e["name"]) for e in entries}
    unknown = sorted(n for g in groups for n in g if n not in names)
    if unknown:
        raise UserError(f"{path}: confusable_groups name unknown classes {unknown}")
    return Classes(tuple(entries), groups)
