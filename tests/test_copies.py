"""The near-copy diagnostic of image-conditioned shifts: known answers."""
import math

import numpy as np
import pytest

from selectbench.evaluation.copies import near_copy, rms


def test_rms_known_answer():
    a = np.zeros((2, 2, 2), np.uint8)
    b = np.stack([np.full((2, 2), 3), np.array([[0, 0], [0, 4]])]).astype(np.uint8)
    assert rms(a, b).tolist() == pytest.approx([3.0, 2.0])


def test_exact_copies_score_zero_against_their_own_image():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(40, 4, 4)).astype(np.uint8)
    base_labels = np.repeat([0, 1], 20)
    cond = np.array([0, 5, 25, 30])
    out = near_copy(base[cond], base, cond, base_labels[cond], base_labels, seed=0)
    assert out["rms_own"] == 0.0 and out["rms_same_class"] > 50 and out["items"] == 4


def test_other_image_is_never_the_conditioning_one_and_thin_classes_are_left_out():
    base = np.stack([np.full((2, 2), v) for v in (0, 10, 100, 200)]).astype(np.uint8)
    base_labels = np.array([0, 0, 1, -1])         # class 1 has one base image; row 3 is not a base row
    gen = base[[0, 2]].copy()
    out = near_copy(gen, base, np.array([0, 2]), np.array([0, 1]), base_labels, seed=3)
    # class 0: the only other image is row 1 (RMS 10); class 1 has no other image
    assert out == {"rms_own": 0.0, "rms_same_class": 10.0, "items": 1}
    none = near_copy(gen[1:], base, np.array([2]), np.array([1]), base_labels, seed=3)
    assert none["items"] == 0 and math.isnan(none["rms_own"])
