"""The contamination audit: planted near-copies of evaluation images found by each detector, none on
clean data, thresholds from the evaluation set's own null (known answers)."""
import numpy as np
import pandas as pd
import pytest

from selectbench.core.errors import UserError
from selectbench.evaluation import contamination as C
from selectbench.evaluation.audit import FLAG_COLUMNS, audit_shift


def _blobs(n, seed, size=28):
    """Distinct smooth random images (Gaussian-blurred noise), uint8 [n, size, size]."""
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(np.random.default_rng(seed).normal(size=(n, size, size)), sigma=(0, 2.5, 2.5))
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    return np.clip(128 + 50 * x, 0, 255).astype(np.uint8)


def _emb(images):
    """A stand-in embedder: the mean-centred pixels (close images get close embeddings)."""
    x = images.reshape(len(images), -1).astype(np.float32)
    return x - x.mean(axis=1, keepdims=True)


def _fp(images):
    return C.Fingerprints.of(images, _emb(images))


def test_dhash_known_answers():
    ramp = np.tile(np.arange(36, dtype=np.uint8) * 7, (32, 1))[None]     # brighter to the right: every bit set
    assert C.dhash(ramp).tolist() == [[255] * 8]
    assert C.dhash(ramp[:, :, ::-1].copy()).tolist() == [[0] * 8]           # darker to the right: none
    assert C.dhash(np.zeros((1, 28, 28), np.uint8)).tolist() == [[0] * 8]  # flat: no gradient
    rgb = np.repeat(ramp[..., None], 3, axis=3)
    assert C.dhash(rgb).tolist() == C.dhash(ramp).tolist()                 # colour and grey agree
    big = np.kron(_blobs(3, 1), np.ones((8, 8), np.uint8))                  # 224 px of the same 28 px images
    assert (np.unpackbits(C.dhash(big) ^ C.dhash(_blobs(3, 1)), axis=1).sum(axis=1) <= 2).all()
    with pytest.raises(UserError):
        C.dhash(np.zeros((2, 3, 4, 5, 6), np.uint8))


def test_planted_near_copies_are_found_by_each_detector_and_clean_data_is_not():
    evalset = _blobs(400, seed=2)
    ev = _fp(evalset)
    th = C.calibrate(C.nearest(ev, ev, skip_self=True), rate=0.0)   # nothing in the set flags its own
    rng = np.random.default_rng(3)
    exact = evalset[:5].copy()
    noisy = np.clip(evalset[5:10].astype(int) + rng.integers(-3, 4, evalset[5:10].shape), 0, 255).astype(np.uint8)
    shifted = np.roll(evalset[10:15], 1, axis=2)
    clean = _blobs(300, seed=4)                                     # other images of the same kind
    shift = np.concatenate([clean[:100], exact, noisy, shifted, clean[100:]])
    fp, ok = _fp(shift), np.ones(len(shift), bool)
    ids = np.array([f"s:{i}" for i in range(len(shift))])
    df, counts = audit_shift(fp, ok, ids, {"test": ev}, {"test": th})
    planted = set(range(100, 115))
    assert planted <= set(df["position"])                          # every planted copy
    # The null is the set's own nearest-distinct-item similarity at rate 0, so a clean item is as
    # likely as a set item to beat the set's closest pair: about 1 in 400 (0.75 of 300 expected).
    assert len(set(df["position"]) - planted) <= 3
    assert counts["test"]["exact"] == 5 and 15 <= counts["test"]["any"] <= 18
    exact_rows = df[df["position"].between(100, 104)]
    assert (exact_rows["detectors"].str.startswith("exact")).all()
    assert exact_rows["eval_item"].tolist() == list(range(5))      # pointed at the image it copies
    assert df[df["position"].between(105, 114)]["eval_item"].tolist() == list(range(5, 15))
    assert (df[df["position"].between(110, 114)]["detectors"] == "cosine").all()  # a 1-px shift moves the hash
    assert list(df.columns) == list(FLAG_COLUMNS)
    # An undecodable item is never flagged, even where its (black) pixels would match.
    ok[100] = False
    assert 100 not in set(audit_shift(fp, ok, ids, {"test": ev}, {"test": th})[0]["position"])
    # Clean data only: at most the null's rate of false flags (here ~1 in 400, so <= 3 of 300).
    df, counts = audit_shift(_fp(clean), np.ones(300, bool), ids[:300], {"test": ev}, {"test": th})
    assert counts["test"]["any"] <= 3 and counts["test"]["exact"] == 0


def test_calibration_follows_the_null_rate():
    null = {"cosine": np.array([0.1, 0.5, 0.9, 0.3, 0.7] * 200), "hamming": np.array([10, 3, 0, 7, 5] * 200)}
    t0 = C.calibrate(null, 0.0)
    assert t0.cosine == pytest.approx(0.9) and t0.hamming == -1 and t0.null_items == 1000  # a 0-bit pair: hash off
    t = C.calibrate(null, 0.1999)                                   # 199 may flag: not the 200 at the top
    assert t.cosine == pytest.approx(0.9) and t.hamming == -1
    t = C.calibrate(null, 0.2)                                      # 200 may flag: exactly the top group
    assert t.cosine == pytest.approx(0.7) and t.hamming == 2
    assert sum(null["cosine"] > t.cosine) <= 200 and sum(null["hamming"] <= t.hamming) <= 200
    one = C.calibrate({"cosine": np.array([0.5]), "hamming": np.array([3])}, 0.0)          # n = 1: no null
    assert one.cosine == float("inf") and one.hamming == -1
    with pytest.raises(UserError):
        C.calibrate(null, 1.0)


def test_nearest_skip_self_and_empty_sets():
    ev = _fp(_blobs(50, seed=5))
    near = C.nearest(ev, ev, skip_self=True)
    assert (near["cosine_item"] != np.arange(50)).all() and (near["hamming_item"] != np.arange(50)).all()
    assert not near["exact"].any()
    dup = C.Fingerprints(np.vstack([ev.emb, ev.emb[:1]]), np.vstack([ev.hashes, ev.hashes[:1]]),
                         np.concatenate([ev.digests, ev.digests[:1]]))
    n2 = C.nearest(dup, dup, skip_self=True)
    assert n2["cosine"][0] == pytest.approx(1.0) and n2["cosine_item"][0] == 50 and n2["hamming"][50] == 0
    empty = C.Fingerprints(np.zeros((0, 32), np.float32), np.zeros((0, 8), np.uint8), np.empty(0, object))
    assert len(C.nearest(empty, ev)["cosine"]) == 0
    assert (C.nearest(ev, empty)["cosine_item"] == -1).all()
    df, counts = audit_shift(empty, np.zeros(0, bool), np.array([]), {"test": ev},
                             {"test": C.calibrate(C.nearest(ev, ev, skip_self=True), 0.0)})
    assert df.empty and counts["test"]["any"] == 0 and isinstance(df, pd.DataFrame)
