"""The embedder's image preprocessing (grey and RGB) and pretrained loading, on a tiny open_clip model."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selectbench.core.errors import UserError
from selectbench.models import embedder as E

# A tiny ViT CLIP in open_clip's model_configs/*.json format: seconds on a CPU.
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TEXTS = ["a photo of a shoe", "a drawing of a cat", "grey trousers"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config path, safetensors weights, torch.save weights) of one random tiny model."""
    import open_clip
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("tiny")
    cfg = d / "tiny-vit-test.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in open_clip.create_model("tiny-vit-test").state_dict().items()}
    save_file(state, d / "w.safetensors")
    torch.save(state, d / "w.pt")
    return cfg, d / "w.safetensors", d / "w.pt"


def _rgb(n=5, side=40):
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _grey(n=5):
    return np.random.default_rng(1).integers(0, 256, (n, 28, 28), dtype=np.uint8)


class Lazy:
    """A loader with len() and slicing only: anything else (np.asarray of it all) fails."""

    def __init__(self, a):
        self.a, self.slices = a, []

    def __len__(self):
        return len(self.a)

    def __getitem__(self, s):
        assert isinstance(s, slice)
        self.slices.append(s)
        return self.a[s]


def _unit(x):
    return np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)


def test_pretrained_from_config_file_encodes_rgb_grey_and_text(tiny):
    cfg, st, _ = tiny
    emb = E.load_pretrained(str(cfg), str(st))
    from open_clip.constants import OPENAI_DATASET_MEAN

    assert emb.image_size == 32 and emb.context_length == 16 and emb.mean == tuple(OPENAI_DATASET_MEAN)
    rgb, grey = _rgb(), _grey()
    a, g, t = emb.encode_images(rgb), emb.encode_images(grey), emb.encode_texts(TEXTS)
    assert a.shape == g.shape == (5, 16) and t.shape == (3, 16) and a.dtype == np.float32
    assert _unit(a) and _unit(g) and _unit(t)
    # Weights come from the file (a second load is not another random init).
    again = E.load_pretrained(str(cfg), str(st))
    np.testing.assert_array_equal(a, again.encode_images(rgb))
    np.testing.assert_allclose(a, again.encode_images(rgb, batch=2), atol=1e-6)  # batch size: rounding only
    np.testing.assert_array_equal(t, again.encode_texts(TEXTS))
    # A grey image is its RGB replica to a pretrained model.
    np.testing.assert_allclose(g, emb.encode_images(np.repeat(grey[..., None], 3, axis=3)), atol=1e-6)


def test_torch_save_weights_load_like_safetensors(tiny):
    cfg, st, pt = tiny
    np.testing.assert_array_equal(E.load_pretrained(str(cfg), str(st)).encode_images(_rgb()),
                                  E.load_pretrained(str(cfg), str(pt)).encode_images(_rgb()))


def test_lazy_input_is_read_batch_by_batch(tiny):
    emb = E.load_pretrained(str(tiny[0]), str(tiny[1]))
    rgb = _rgb(7)
    lazy = Lazy(rgb)
    np.testing.assert_array_equal(emb.encode_images(lazy, batch=3), emb.encode_images(rgb, batch=3))
    assert [(s.start, s.stop) for s in lazy.slices] == [(0, 3), (3, 6), (6, 9)]


def test_rgb_input_to_the_trained_embedder():
    torch.manual_seed(0)
    emb = E.Embedder(E.build(E.DEFAULT_ARCH), 24, 32)
    out = emb.encode_images(_rgb())
    assert out.shape == (5, 64) and _unit(out)
    x = E.images_to_tensor(np.full((1, 40, 40, 3), 255, np.uint8))
    assert x.shape == (1, 3, 32, 32) and torch.allclose(x, torch.tensor((1 - E.MEAN) / E.STD))


def _old_images_to_tensor(images, size=32):
    """images_to_tensor as it was before RGB support (frozen copy): the trained embedder's numbers."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    pad = (size - x.shape[-1]) // 2
    if pad > 0:
        x = F.pad(x, (pad, size - x.shape[-1] - pad, pad, size - x.shape[-2] - pad))
    x = (x - 0.2860) / 0.3530
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def test_trained_grey_path_is_unchanged():
    grey = _grey(9)
    assert torch.equal(E.images_to_tensor(grey), _old_images_to_tensor(grey))
    assert torch.equal(E.images_to_tensor(grey, 36), _old_images_to_tensor(grey, 36))
    torch.manual_seed(0)
    model = E.build(E.DEFAULT_ARCH).eval()
    with torch.no_grad():
        want = F.normalize(model.encode_image(_old_images_to_tensor(grey)), dim=-1).numpy()
    np.testing.assert_array_equal(E.Embedder(model, 24, 32).encode_images(grey, batch=9), want)


def test_missing_or_bad_files_are_one_line_user_errors(tiny, tmp_path):
    cfg, st, _ = tiny
    cases = [(str(cfg), str(tmp_path / "none.safetensors"), "embedder.weights: file not found"),
             (str(tmp_path / "none.json"), str(st), "embedder.model: cannot read")]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"embed_dim": 16}))
    cases.append((str(bad), str(st), "needs keys embed_dim, vision_cfg, text_cfg"))
    other = tmp_path / "other-arch.json"
    other.write_text(json.dumps(TINY | {"embed_dim": 8}))
    cases.append((str(other), str(st), "does not match the architecture"))
    pickled = tmp_path / "w.pt"
    torch.save({"state_dict": {}, "opaque": Lazy([])}, pickled)  # not loadable with weights_only
    cases.append((str(cfg), str(pickled), "cannot load (UnpicklingError"))
    for model, weights, words in cases:
        with pytest.raises(UserError) as e:
            E.load_pretrained(model, weights)
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
