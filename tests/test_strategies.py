"""Curation strategies as pure functions: known answers on hand-made inputs."""
import numpy as np
import pytest

from selectbench.core.classes import mentions
from selectbench.core.errors import UserError
from selectbench.curation import strategies as S


def test_balanced_subset_takes_per_class_and_caps_short_classes():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 0)
    rows = S.balanced_subset(labels, 5, np.random.default_rng(0), num_classes=3)
    assert np.bincount(labels[rows], minlength=3).tolist() == [5, 3, 0]
    assert len(set(rows)) == len(rows)
    again = S.balanced_subset(labels, 5, np.random.default_rng(0), num_classes=3)
    assert np.array_equal(rows, again)


def test_knn_transfer_labels_neighbours_with_query_label():
    bank = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    queries = np.array([[1, 0.05], [0.05, 1]], dtype=np.float32)
    rows, labels, scores = S.knn_transfer(queries, np.array([3, 7]), bank, k=2, dedup="vote", num_classes=8)
    assert dict(zip(rows.tolist(), labels.tolist())) == {0: 3, 1: 3, 2: 7, 3: 7}
    assert np.all(scores > 0.9)


def test_knn_transfer_dedup_modes_on_a_conflict():
    bank = np.array([[1, 0], [0, 1]], dtype=np.float32)
    # Both queries retrieve item 0; the closer one (label 1) should win the vote.
    queries = np.array([[1, 0.0], [1, 0.5]], dtype=np.float32)
    r, l, _ = S.knn_transfer(queries, np.array([1, 2]), bank, k=1, dedup="vote", num_classes=3)
    assert r.tolist() == [0] and l.tolist() == [1]
    r, l, _ = S.knn_transfer(queries, np.array([1, 2]), bank, k=1, dedup="drop", num_classes=3)
    assert r.tolist() == []
    r, l, _ = S.knn_transfer(queries, np.array([1, 2]), bank, k=1, dedup="none", num_classes=3)
    assert r.tolist() == [0, 0] and sorted(l.tolist()) == [1, 2]
    with pytest.raises(UserError):
        S.knn_transfer(queries, np.array([1, 2]), bank, k=1, dedup="bogus", num_classes=3)


def test_class_mentions_whole_words_and_synonyms():
    syn = [["t-shirt", "tee"], ["coat", "jacket"], ["bag"]]
    caps = ["Red TEE for sale", "coat of arms", "teenager jacket", "handbag", "a bag and a tee", "nothing"]
    m = mentions(caps, syn)
    assert m.tolist() == [[True, False, False], [False, True, False], [False, True, False],
                          [False, False, False], [True, False, True], [False, False, False]]
    rows, labels = S.single_mention(m)
    assert rows.tolist() == [0, 1, 2] and labels.tolist() == [0, 1, 1]


def test_text_filter_threshold_and_range():
    mentions = np.array([[1, 0], [0, 1], [1, 1], [1, 0]], dtype=bool)
    cap = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    defs = np.array([[1, 0], [0, 1]], dtype=np.float32)
    rows, labels, scores = S.text_filter(mentions, cap, defs, 0.5)
    assert rows.tolist() == [0, 1] and labels.tolist() == [0, 1]
    rows, _, _ = S.text_filter(mentions, cap, defs, -1.0)
    assert rows.tolist() == [0, 1, 3]  # two-class caption never passes
    with pytest.raises(UserError, match="clip_threshold"):
        S.text_filter(mentions, cap, defs, 1.5)


def test_knn_vote_and_cap_per_class():
    bank = np.array([[1, 0], [0.95, 0.05], [0, 1]], dtype=np.float32)
    lab, conf = S.knn_vote(np.array([[1, 0.01]], dtype=np.float32), bank, np.array([4, 4, 2]), k=3, num_classes=5)
    assert lab.tolist() == [4] and 0.9 < conf[0] <= 1
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.2])
    assert S.cap_per_class(labels, scores, 2).tolist() == [1, 2, 3, 4]
    assert S.cap_per_class(labels, scores, None).tolist() == [0, 1, 2, 3, 4]
    assert S.cap_per_class(labels, scores, 0).tolist() == []


# ------------------------------------------------------------------------------ SemDeDup, CLIP score
def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_semdedup_removes_planted_duplicates_and_keeps_one_per_group():
    from selectbench.curation.strategies import semdedup

    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(40, 16)))
    dups = _unit(base[:10] + 1e-4 * rng.normal(size=(10, 16)))   # near-copies of items 0-9
    emb = np.concatenate([base, dups, base[:3]])                    # and exact copies of 0-2
    kept = semdedup(emb, n_clusters=4, epsilon=0.01, seed=0)
    assert kept.tolist() == sorted(kept.tolist())
    assert len(kept) == 40  # one per group: 40 distinct items survive, 13 copies go
    groups = [{i, 40 + i} | ({50 + i} if i < 3 else set()) for i in range(10)]
    assert all(len(g & set(kept.tolist())) == 1 for g in groups)
    assert set(range(10, 40)) <= set(kept.tolist())
    assert semdedup(emb, 4, 0.01, seed=0).tolist() == kept.tolist()
    # independent directions in 256-d are far below similarity 0.5: nothing to drop at epsilon 0.5
    wide = _unit(rng.normal(size=(40, 256)))
    assert len(semdedup(wide, 4, 0.5, seed=0)) == 40


def test_semdedup_edge_cases():
    from selectbench.curation.strategies import semdedup

    assert semdedup(np.empty((0, 8), np.float32), 3, 0.05, 0).tolist() == []
    assert semdedup(np.ones((1, 8), np.float32), 3, 0.05, 0).tolist() == [0]
    assert semdedup(np.ones((5, 8), np.float32), 3, 0.05, 0).tolist() == [0]  # five copies: one stays
    with pytest.raises(UserError, match="epsilon"):
        semdedup(np.ones((2, 8), np.float32), 1, -0.1, 0)


def _flipped_blobs(n=600, c=4, flips=60, seed=3):
    """Well-separated Gaussian classes with `flips` planted wrong labels (always another class)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(c), n // c)
    x = rng.normal(size=(c, 8))[truth] * 5 + rng.normal(size=(len(truth), 8))
    given = truth.copy()
    flip = np.sort(rng.choice(len(truth), size=flips, replace=False))
    given[flip] = (truth[flip] + rng.integers(1, c, size=flips)) % c
    return x, truth, given, flip


def test_clean_finds_planted_label_flips_and_keeps_clean_items():
    from selectbench.curation.strategies import clean
    from selectbench.evaluation.noise import label_issues

    x, truth, given, flip = _flipped_blobs()
    issues = label_issues(x, given, 4, folds=5, seed=0)
    found = set(np.flatnonzero(issues).tolist())
    assert len(found & set(flip.tolist())) >= 54          # at least 90% of the 60 planted flips
    assert len(found - set(flip.tolist())) <= 3           # at most 3 of 540 clean items flagged
    kept = clean(x, given, 4, folds=5, seed=0)
    assert kept.tolist() == np.flatnonzero(~issues).tolist() and kept.tolist() == sorted(kept.tolist())
    assert (given[kept] == truth[kept]).mean() >= 0.99
    assert clean(x, given, 4, folds=5, seed=0).tolist() == kept.tolist()  # same seed, same answer
    # clean labels: nothing (or next to nothing) flagged
    assert label_issues(x, truth, 4, folds=5, seed=0).sum() <= 3


def test_clean_edge_cases():
    from selectbench.curation.strategies import clean
    from selectbench.evaluation.inputs import MetricInputError
    from selectbench.evaluation.noise import label_issues

    assert clean(np.empty((0, 8)), np.empty(0, dtype=int), 3, 5, 0).tolist() == []
    assert clean(np.ones((1, 8)), np.array([2]), 3, 5, 0).tolist() == [0]           # n = 1: nothing to learn from
    assert clean(np.ones((6, 8)), np.zeros(6, dtype=int), 3, 5, 0).tolist() == list(range(6))  # one class
    x, _, given, _ = _flipped_blobs(n=40, c=2, flips=0)
    lone = np.vstack([x, x[:1]])                                                   # a single-sample class 2
    assert not label_issues(lone, np.append(given, 2), 3, folds=5, seed=0)[-1]      # cannot be assessed: kept
    with pytest.raises(MetricInputError):
        label_issues(x, given[:-1], 2)
    with pytest.raises(MetricInputError):
        label_issues(x, given, 2, folds=1)


def test_clip_score_filter_orders_by_image_caption_similarity():
    from selectbench.curation.strategies import clip_score_filter

    rng = np.random.default_rng(1)
    txt = _unit(rng.normal(size=(10, 8)))
    noise = _unit(rng.normal(size=(10, 8)))
    w = np.linspace(0.0, 1.0, 10)[:, None]                       # item i's image is w_i of its caption
    img = _unit(w * txt + (1 - w) * noise)
    score = np.einsum("nd,nd->n", img, txt)
    top3, s3 = clip_score_filter(img, txt, fraction=0.3)
    assert top3.tolist() == sorted(np.argsort(-score)[:3].tolist()) and 9 in top3
    assert np.allclose(s3, score[top3])
    assert clip_score_filter(img, txt, threshold=0.999)[0].tolist() == [9]
    assert clip_score_filter(img, txt, fraction=0.0)[0].tolist() == []
    assert clip_score_filter(img, txt, fraction=1.0)[0].tolist() == list(range(10))
    with pytest.raises(UserError, match="exactly one"):
        clip_score_filter(img, txt)
    with pytest.raises(UserError, match="exactly one"):
        clip_score_filter(img, txt, fraction=0.5, threshold=0.2)
