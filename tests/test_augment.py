"""selectbench.models.augment: the batched random resized crop + flip, against known answers."""
import numpy as np
import torch

from selectbench.models.augment import augment, crop_boxes


def _imgs(n=6, c=1, h=28, w=28):
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, c, h, w), dtype=np.uint8))


def test_full_scale_without_flip_is_the_identity():
    x = _imgs()
    out = augment(x, 28, (1.0, 1.0), 0.0, (0.0,), (1.0,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.float() / 255, atol=1e-5, rtol=0)  # affine_grid rounding; a grey level is 4e-3


def test_flip_mirrors_the_image():
    x = _imgs(c=3)
    out = augment(x, 28, (1.0, 1.0), 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.float().flip(-1) / 255, atol=1e-5, rtol=0)  # affine_grid rounding; a grey level is 4e-3


def test_normalisation_and_output_size():
    x = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    out = augment(x, 32, (0.6, 1.0), 0.5, (0.5,), (0.25,), torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 32, 32)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))  # (1 - 0.5) / 0.25 everywhere


def test_boxes_fit_and_cover_the_scale_range():
    g = torch.Generator().manual_seed(1)
    box = crop_boxes(4000, 28, 40, (0.3, 0.7), g)
    top, left, h, w = box.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 40).all()
    share = h * w / (28 * 40)
    assert 0.27 < share.min() and share.max() < 0.75  # rounding to whole pixels moves it a little
    assert abs(float(share.mean()) - 0.5) < 0.02
    ratio = w / h
    assert 0.7 < ratio.min() and ratio.max() < 1.42


def test_same_seed_same_batch():
    x = _imgs()
    a = augment(x, 32, (0.6, 1.0), 0.5, (0.3,), (0.3,), torch.Generator().manual_seed(5))
    b = augment(x, 32, (0.6, 1.0), 0.5, (0.3,), (0.3,), torch.Generator().manual_seed(5))
    c = augment(x, 32, (0.6, 1.0), 0.5, (0.3,), (0.3,), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
