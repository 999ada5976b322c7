"""The matched image budget and the negative control's label shuffle: known answers."""
import numpy as np
import pytest

from selectbench.curation.budget import match_budget, shuffle_labels


def _counts(labels, rows, classes):
    return np.bincount(np.asarray(labels)[rows], minlength=classes).tolist()


def test_balanced_shift_stays_balanced():
    labels = np.repeat(np.arange(10), 200)
    rows = match_budget(labels, 1000, seed=0)
    assert _counts(labels, rows, 10) == [100] * 10
    assert (np.diff(rows) > 0).all()


def test_skewed_shift_keeps_its_shares_by_largest_remainder():
    labels = np.repeat([0, 1, 2], [6, 3, 1])
    # exact shares of 5: 3.0, 1.5, 0.5 -> floors 3, 1, 0; one left goes to the larger remainder,
    # a tie (0.5 and 0.5) broken towards the lower class id.
    assert _counts(labels, match_budget(labels, 5, seed=1), 3) == [3, 2, 0]
    # 7: 4.2, 2.1, 0.7 -> 4, 2, 0 plus one to class 2 (remainder 0.7)
    assert _counts(labels, match_budget(labels, 7, seed=1), 3) == [4, 2, 1]


def test_budget_at_or_above_the_size_keeps_everything():
    labels = np.array([3, 1, 1])
    assert match_budget(labels, 3, 0).tolist() == [0, 1, 2]
    assert match_budget(labels, 10, 0).tolist() == [0, 1, 2]
    assert match_budget(np.array([], dtype=np.int64), 5, 0).tolist() == []


def test_zero_budget_and_bad_budget():
    assert match_budget(np.array([0, 1]), 0, 0).tolist() == []
    with pytest.raises(ValueError, match="n"):
        match_budget(np.array([0, 1]), -1, 0)


def test_draw_is_seeded_and_within_class():
    labels = np.repeat(np.arange(4), 50)
    a, b, c = (match_budget(labels, 40, s) for s in (7, 7, 8))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert _counts(labels, a, 4) == [10] * 4


def test_shuffle_keeps_counts_and_gives_every_class_each_label_at_its_rate():
    labels = np.repeat(np.arange(10), 100)
    out = shuffle_labels(labels, seed=0)
    assert np.bincount(out).tolist() == [100] * 10
    table = np.zeros((10, 10), int)
    np.add.at(table, (labels, out), 1)
    assert (table == 10).all()  # exactly, not only in expectation: 10% keep their true label
    assert shuffle_labels(labels, 0).tolist() == out.tolist()
    assert shuffle_labels(labels, 1).tolist() != out.tolist()


def test_shuffle_of_a_skewed_shift_is_within_one_item_of_independence():
    labels = np.random.default_rng(1).choice(7, size=537, p=[.3, .2, .15, .15, .1, .06, .04])
    out = shuffle_labels(labels, seed=3)
    n = np.bincount(labels, minlength=7)
    assert np.bincount(out, minlength=7).tolist() == n.tolist()
    table = np.zeros((7, 7), int)
    np.add.at(table, (labels, out), 1)
    assert np.abs(table - np.outer(n, n) / len(labels)).max() < 1


def test_shuffle_edge_cases():
    assert shuffle_labels(np.array([3]), 0).tolist() == [3]
    assert shuffle_labels(np.array([], dtype=np.int64), 0).tolist() == []
    assert shuffle_labels(np.full(5, 2), 0).tolist() == [2] * 5
