"""selectbench.core: index gather (per-source lookups put back in index order) and the params Section reader."""
import numpy as np
import pytest

from selectbench.core.errors import UserError
from selectbench.core.index import gather, make_index
from selectbench.core.params import Section


def _index(sources, rows):
    return make_index([f"{s}:{r}" for s, r in zip(sources, rows)], sources, [0] * len(rows), [1.0] * len(rows),
                      row=np.asarray(rows, dtype=np.int64))


def test_gather_interleaves_sources_in_index_order():
    idx = _index(["pool", "train", "pool", "generated"], [5, 1, 0, 0])
    train, pool = np.arange(10) * 10, np.arange(10) * 100
    out = gather(idx, {"train": lambda r: train[r], "pool": lambda r: pool[r], "generated": lambda r: np.full(len(r), -2)}, "x")
    assert out.tolist() == [500, 10, 0, -2]


def test_gather_keeps_trailing_dimensions():
    idx = _index(["train", "pool"], [1, 2])
    emb = {"train": np.eye(3, dtype=np.float32), "pool": 2 * np.eye(3, dtype=np.float32)}
    out = gather(idx, {k: (lambda r, a=a: a[r]) for k, a in emb.items()}, "x")
    assert out.shape == (2, 3) and out.dtype == np.float32
    assert out.tolist() == [[0, 1, 0], [0, 0, 2]]


def test_gather_empty_index_and_unknown_source():
    assert gather(_index([], []), {"train": lambda r: r}, "x") is None
    with pytest.raises(UserError, match="unknown source 'web'"):
        gather(_index(["web"], [0]), {"train": lambda r: r}, "labels")


def test_section_reads_its_keys_and_names_the_full_key_in_errors():
    p = {"curation": {"seed": 3}, "shifts": {"in": {"per_class": 5, "rebalance": {"n": 2}, "cap": None}}}
    cfg = Section(p, "shifts.in")
    assert cfg.get("per_class", int, lo=0) == 5 and cfg.sub("rebalance").get("n", int) == 2
    assert cfg.shared("curation.seed", int) == 3 and cfg.opt("cap") is None and cfg.opt("absent", 7) == 7
    with pytest.raises(UserError, match=r"^shifts\.in\.per_class: must be >= 6, got 5$"):
        cfg.get("per_class", int, lo=6)
    with pytest.raises(UserError, match=r"^shifts\.in\.rebalance\.k: missing from params.yaml$"):
        cfg.sub("rebalance").get("k", int)
    with pytest.raises(UserError, match=r"^shifts\.out: missing"):
        Section(p, "shifts.out")
