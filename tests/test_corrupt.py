"""The ImageNet-C analogue (selectbench.corruptions.corrupted_set) is a pure function of its seed."""
import gzip
from pathlib import Path

import numpy as np
import pytest

from selectbench.evaluation.corruptions import corrupted_set

FMNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def images():
    if FMNIST_TEST.exists():
        with gzip.open(FMNIST_TEST) as f:
            return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:50].copy()
    rng = np.random.default_rng(0)  # any grey 28x28 images exercise the same code
    x = np.zeros((50, 28, 28), np.uint8)
    x[:, 6:22, 8:20] = rng.integers(60, 255, (50, 1, 1))
    return x


def test_two_runs_give_identical_arrays_with_any_worker_count(images):
    labels = np.arange(len(images)) % 10
    a = corrupted_set(images, labels, 2, seed=0, workers=2)
    b = corrupted_set(images, labels, 2, seed=0, workers=1)
    names = a[4]
    # impulse_noise and glass_blur used to draw from unseeded generators (OS entropy).
    differs = [n for c, n in enumerate(names) if not np.array_equal(a[0][a[2] == c], b[0][b[2] == c])]
    assert differs == []
    for x, y in zip(a[:4] + a[5:], b[:4] + b[5:]):
        np.testing.assert_array_equal(x, y)
    # The seeded corruptions still corrupt: every cell differs from the clean images.
    clean = images[a[5]]
    for c, n in enumerate(names):
        if n in ("impulse_noise", "glass_blur"):
            assert (a[0][a[2] == c] != clean[a[2] == c]).any(), n


def test_rgb_images_keep_their_shape_and_are_repeatable():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 32, 40, 3), dtype=np.uint8)  # corrupted as they are: no pad, no grey
    labels = np.arange(5)
    # workers=1: each worker process JIT-compiles glass_blur (seconds); worker counts are tested above.
    a, b = (corrupted_set(rgb, labels, 2, seed=0, workers=1) for _ in range(2))
    assert a[0].shape == (15 * 5 * 2, 32, 40, 3) and a[0].dtype == np.uint8
    for x, y in zip(a[:4] + a[5:], b[:4] + b[5:]):
        np.testing.assert_array_equal(x, y)
    clean = rgb[a[5]]
    assert all((a[0][a[2] == c] != clean[a[2] == c]).any() for c in range(15))


def test_cells_draw_distinct_images_while_the_test_set_allows():
    from selectbench.evaluation.corruptions import cell_rows

    rows = cell_rows(1000, 10, 75, seed=0)
    assert rows.shape == (75, 10) and len(np.unique(rows)) == 750
    assert (np.diff(rows, axis=1) > 0).all()
    small = cell_rows(50, 10, 75, seed=0)           # 750 > 50: each cell its own draw without repeats
    assert small.shape == (75, 10) and all(len(set(r)) == 10 for r in small.tolist())
    assert cell_rows(1000, 10, 75, 0).tolist() == rows.tolist()
    assert cell_rows(5, 10, 3, 0).shape == (3, 5)   # n capped at the test set


def test_labels_follow_their_images(images):
    labels = np.arange(len(images)) % 10
    out = corrupted_set(images[:20], labels[:20], 2, seed=1, workers=1)
    np.testing.assert_array_equal(out[1], labels[out[5]])
    assert len(out[0]) == len(out[5]) == 150
