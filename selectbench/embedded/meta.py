"""The embedded default's checked-in metadata readers: crowd vocabulary, OpenImages mapping,
the natural-shift map (the class list itself: selectbench.core.classes)."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from selectbench.core.classes import Classes
from selectbench.core.classes import load as _load
from selectbench.core.errors import UserError
from selectbench.core.layout import META, PROJECT

META_DIR = PROJECT / META  # the checked-in metadata, wherever the caller runs


@dataclass
class Vocab:
    labels: list[str]
    display: list[str]
    level: list[str]
    applies: list[frozenset]


def load_vocab(meta_dir: Path) -> Vocab:
    path = meta_dir / "crowd_vocab.csv"
    v = Vocab([], [], [], [])
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["level"] not in ("fine", "coarse", "generic"):
                raise UserError(f"{path}: {row['LabelName']}: unknown level {row['level']!r}")
            v.labels.append(row["LabelName"])
            v.display.append(row["DisplayName"])
            v.level.append(row["level"])
            v.applies.append(frozenset(s.strip() for s in row["applies_to"].split(";") if s.strip()))
    if len(set(v.labels)) != len(v.labels):
        raise UserError(f"{path}: duplicate LabelName")
    return v


def load_mapping(meta_dir: Path, vocab: Vocab, n_classes: int) -> dict[str, int]:
    path = meta_dir / "oi_mapping.json"
    with open(path) as f:
        mapping = json.load(f)
    known = set(vocab.labels)
    for k, c in mapping.items():
        if k not in known or not isinstance(c, int) or not 0 <= c < n_classes:
            raise UserError(f"{path}: bad entry {k!r}: {c!r}")
    return mapping


@dataclass
class NaturalEntry:
    source: str
    key: str
    label: int


def load_natural_map(meta_dir: Path, classes: Classes) -> list[NaturalEntry]:
    path = meta_dir / "natural_map.csv"
    out = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            label = int(row["label"])
            if row["source"] not in ("clipart", "emoji"):
                raise UserError(f"{path}:{i}: unknown source {row['source']!r}")
            if not 0 <= label < len(classes.names) or classes.names[label] != row["class_name"]:
                raise UserError(f"{path}:{i}: label {label} is not class {row['class_name']!r}")
            out.append(NaturalEntry(row["source"], row["key"].strip(), label))
    return out


def load_classes(meta_dir: Path) -> Classes:
    return _load(path=Path(meta_dir) / "classes.yaml")
