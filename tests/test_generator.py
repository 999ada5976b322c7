"""Synthetic-shift generators: determinism, resume, save/load, and Stable Diffusion plumbing.

Everything runs on tiny random models on CPU; quality is not tested here.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from selectbench.core.errors import UserError
from selectbench.models import checkpoint, generator, generator_train, sampling, sd
from tests.fixtures import write_tiny_sd

W = 32  # text width of the stand-in encoder
TINY_UNET = {
    "block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}
CAPTIONS = ["a photo of a t-shirt", "a photo of an ankle boot", "a photo of a bag"]


# Module scope so the module-scoped models below are built under it too: CPU float reductions
# (and so bitwise results) depend on the thread count.
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class StandInText(torch.nn.Module):
    """Deterministic token-level text features: a fixed random embedding of CLIP BPE ids."""

    def __init__(self, width: int = W, context: int = 16):
        super().__init__()
        self.context = context
        self.emb = torch.nn.Embedding(49408, width)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(49408, width, generator=torch.Generator().manual_seed(0)))

    def forward(self, texts):
        import open_clip

        return self.emb(open_clip.tokenizer.tokenize(list(texts), context_length=self.context))


@pytest.fixture(scope="module")
def enc():
    return StandInText()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    imgs = np.zeros((24, 28, 28), np.uint8)
    for i in range(24):
        k = i % 3
        imgs[i, 6 + 2 * k:22, 6:22 - 2 * k] = rng.integers(120, 255)
    caps = [CAPTIONS[i % 3] for i in range(24)]
    return imgs, caps


def _train(data, enc, **kw):
    imgs, caps = data
    args = dict(steps=4, batch_size=8, lr=2e-3, seed=0, unet_cfg=TINY_UNET)
    args.update(kw)
    return generator_train.train_generator(imgs, caps, enc, W, **args)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def model(data, enc):
    return _train(data, enc)


def test_training_is_deterministic_and_seeded(data, enc, model):
    assert _same_weights(model, _train(data, enc))
    assert not _same_weights(model, _train(data, enc, seed=1))


def test_training_with_per_batch_caption_encoding(data, enc):
    # More distinct captions than steps * batch_size: captions are encoded batch by batch.
    imgs, _ = data
    caps = [f"a photo of item {i}" for i in range(len(imgs))]
    a = generator_train.train_generator(imgs, caps, enc, W, steps=2, batch_size=8, lr=1e-3, seed=0, unet_cfg=TINY_UNET)
    b = generator_train.train_generator(imgs, caps, enc, W, steps=2, batch_size=8, lr=1e-3, seed=0, unet_cfg=TINY_UNET)
    assert _same_weights(a, b)


def test_training_resumes_to_the_uninterrupted_result(data, enc, model, tmp_path):
    logged = []

    def crash_at_2(step, loss):
        logged.append(step)
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(data, enc, ckpt_dir=tmp_path, ckpt_every=1, log=crash_at_2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.load(checkpoint.path(tmp_path), weights_only=True)["step"] == 3

    logged.clear()
    resumed = _train(data, enc, ckpt_dir=tmp_path, ckpt_every=1, log=lambda s, loss: logged.append(s))
    assert logged == [3]
    assert _same_weights(resumed, model)

    # A checkpoint from another configuration is not resumed from.
    logged.clear()
    other = _train(data, enc, ckpt_dir=tmp_path, lr=1e-3, log=lambda s, loss: logged.append(s))
    assert logged == [0, 1, 2, 3]
    assert not _same_weights(other, model)


def test_save_load_roundtrip(model, enc, tmp_path):
    generator.save_generator(model, tmp_path / "gen")
    assert (tmp_path / "gen" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = generator.load_generator(tmp_path / "gen")
    assert _same_weights(loaded, model)
    kw = dict(seed=3, steps=2, batch_size=4, progress=False)
    assert np.array_equal(sampling.txt2img(model, enc, CAPTIONS, **kw), sampling.txt2img(loaded, enc, CAPTIONS, **kw))


@pytest.mark.parametrize("scheduler", ["ddim", "unipc"])
def test_txt2img_is_per_item_deterministic(model, enc, scheduler):
    prompts = [CAPTIONS[i % 3] for i in range(7)]
    kw = dict(steps=3, guidance=3.0, scheduler=scheduler, progress=False)
    a = sampling.txt2img(model, enc, prompts, seed=5, batch_size=4, **kw)
    assert a.shape == (7, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, sampling.txt2img(model, enc, prompts, seed=5, batch_size=4, **kw))
    # Item i's noise is seeded by (seed, i): batching does not change what item i becomes
    # (allowing one grey level for batch-size dependent float reductions).
    b = sampling.txt2img(model, enc, prompts, seed=5, batch_size=3, **kw)
    assert np.abs(a.astype(int) - b).max() <= 1
    assert not np.array_equal(a, sampling.txt2img(model, enc, prompts, seed=6, batch_size=4, **kw))


def test_img2img_strength(model, enc, data):
    imgs, caps = data
    imgs, caps = imgs[:5], caps[:5]
    kw = dict(steps=4, seed=2, batch_size=4, progress=False)
    assert np.array_equal(sampling.img2img(model, enc, imgs, caps, strength=0.0, **kw), imgs)
    half = sampling.img2img(model, enc, imgs, caps, strength=0.5, **kw)
    assert half.shape == imgs.shape and half.dtype == np.uint8
    assert np.array_equal(half, sampling.img2img(model, enc, imgs, caps, strength=0.5, **kw))
    assert not np.array_equal(half, imgs)
    # The output depends on the input image, not only on the noise.
    assert not np.array_equal(half, sampling.img2img(model, enc, imgs[::-1].copy(), caps, strength=0.5, **kw)[::-1])
    uni = sampling.img2img(model, enc, imgs, caps, strength=0.5, scheduler="unipc", **kw)
    assert uni.shape == imgs.shape


def test_resume_dir_skips_finished_shards(model, enc, data, tmp_path):
    imgs, caps = data
    imgs, caps = imgs[:10], caps[:10]
    kw = dict(strength=0.75, steps=4, seed=9, batch_size=4, progress=False)
    full = sampling.img2img(model, enc, imgs, caps, **kw)
    kw["shard_size"] = 4  # one batch per shard

    calls = {"n": 0}
    real_forward = model.unet.forward
    budget = 3  # one finished batch (3 denoising steps at strength 0.75), then a "kill"

    def counted(*a, **k):
        calls["n"] += 1
        if calls["n"] > budget:
            raise KeyboardInterrupt
        return real_forward(*a, **k)

    model.unet.forward = counted
    try:
        with pytest.raises(KeyboardInterrupt):
            sampling.img2img(model, enc, imgs, caps, resume_dir=tmp_path, **kw)
        assert [p.name for p in sorted(tmp_path.glob("gen-*.tar"))] == ["gen-000000.tar"]
        assert not (tmp_path / "sizes.json").exists()  # unfinished: no view can open it
        calls["n"], budget = 0, 10**6
        resumed = sampling.img2img(model, enc, imgs, caps, resume_dir=tmp_path, **kw)
        assert calls["n"] == 2 * 3  # only the two unfinished shards ran
        assert np.array_equal(np.asarray(resumed), full) and len(resumed) == 10
        assert np.array_equal(resumed[3], full[3]) and np.array_equal(resumed[[9, 0]], full[[9, 0]])
        assert np.array_equal(resumed[full.sum(axis=(1, 2)) > 0], full[full.sum(axis=(1, 2)) > 0])
        # Another request in the same folder does not reuse those batches.
        calls["n"] = 0
        other = sampling.img2img(model, enc, imgs, caps, resume_dir=tmp_path, **{**kw, "seed": 10})
        assert calls["n"] == 3 * 3
        assert not np.array_equal(np.asarray(other), full)
    finally:
        del model.unet.forward


def test_bad_inputs_are_user_errors(model, enc, data):
    imgs, caps = data
    with pytest.raises(UserError, match="captions"):
        generator_train.train_generator(imgs, caps[:-1], enc, W, steps=1, batch_size=2, lr=1e-3, seed=0)
    with pytest.raises(UserError, match="images"):
        generator_train.train_generator(imgs.astype(np.float32), caps, enc, W, steps=1, batch_size=2, lr=1e-3, seed=0)
    with pytest.raises(UserError, match="encode_prompts"):
        generator_train.train_generator(imgs, caps, enc, W + 1, steps=1, batch_size=2, lr=1e-3, seed=0, unet_cfg=TINY_UNET)
    with pytest.raises(UserError, match="unet_cfg.in_channels"):
        generator.build_generator(W, {"in_channels": 3})
    with pytest.raises(UserError, match="scheduler"):
        sampling.txt2img(model, enc, CAPTIONS, seed=0, scheduler="euler", progress=False)
    with pytest.raises(UserError, match="strength"):
        sampling.img2img(model, enc, imgs, caps, seed=0, strength=1.5, progress=False)
    with pytest.raises(UserError, match="not a saved generator"):
        generator.load_generator(os.devnull)


# --------------------------------------------------------------------------------------------
# Image variations: the same model also conditioned on image embeddings


def _emb(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def var_model(data, enc):
    return _train(data, enc, image_emb=_emb(len(data[0])), p_image=0.5)


def test_image_conditioning_is_trained_and_resumes(data, enc, var_model, model, tmp_path):
    assert var_model.config["image_dim"] == 8 and var_model.image_proj is not None
    assert _same_weights(var_model, _train(data, enc, image_emb=_emb(len(data[0])), p_image=0.5))
    # p_image moves the training stream: the unet differs from the text-only model's
    assert not torch.equal(var_model.unet.conv_in.weight, model.unet.conv_in.weight)

    def crash_at_1(step, loss):
        if step == 1:
            raise KeyboardInterrupt

    kw = dict(image_emb=_emb(len(data[0])), p_image=0.5, ckpt_dir=tmp_path, ckpt_every=1)
    with pytest.raises(KeyboardInterrupt):
        _train(data, enc, log=crash_at_1, **kw)
    assert _same_weights(_train(data, enc, **kw), var_model)


def test_variation_is_seeded_per_item_and_reads_only_the_embedding(var_model, enc, tmp_path):
    e = _emb(5, seed=1)
    kw = dict(steps=3, guidance=3.0, progress=False)
    a = sampling.variation(var_model, enc, e, seed=4, batch_size=2, **kw)
    assert a.shape == (5, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, sampling.variation(var_model, enc, e, seed=4, batch_size=2, **kw))
    b = sampling.variation(var_model, enc, e, seed=4, batch_size=5, **kw)
    assert np.abs(a.astype(int) - b).max() <= 1
    # The condition matters: the same noise under other embeddings gives other images.
    assert not np.array_equal(a, sampling.variation(var_model, enc, _emb(5, seed=2), seed=4, batch_size=2, **kw))
    generator.save_generator(var_model, tmp_path / "gen")
    loaded = generator.load_generator(tmp_path / "gen")
    assert _same_weights(loaded, var_model)
    assert np.array_equal(a, sampling.variation(loaded, enc, e, seed=4, batch_size=2, **kw))


def test_variation_bad_inputs_are_user_errors(model, var_model, enc, data):
    imgs, caps = data
    with pytest.raises(UserError, match="image conditioning"):
        sampling.variation(model, enc, _emb(2), seed=0, steps=1, progress=False)
    with pytest.raises(UserError, match="image_emb"):
        sampling.variation(var_model, enc, _emb(2, d=5), seed=0, steps=1, progress=False)
    with pytest.raises(UserError, match="image_emb"):
        sampling.variation(var_model, enc, np.zeros((0, 8), np.float32), seed=0, steps=1, progress=False)
    with pytest.raises(UserError, match="p_image"):
        generator_train.train_generator(imgs, caps, enc, W, steps=1, batch_size=2, lr=1e-3, seed=0, p_image=0.5)
    with pytest.raises(UserError, match="image_emb"):
        generator_train.train_generator(imgs, caps, enc, W, steps=1, batch_size=2, lr=1e-3, seed=0,
                                        image_emb=_emb(3), p_image=0.5)


# --------------------------------------------------------------------------------------------
# Stable Diffusion: tiny random pipelines saved and reloaded offline


@pytest.fixture(scope="module")
def sd_dirs(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("sd"))


def _check_rgb(out, n, size=32):
    arr = np.asarray(out)
    assert arr.shape == (n, size, size, 3) and arr.dtype == np.uint8


def _arrays(out):
    return np.asarray(out)


def test_sd_txt2img_end_to_end(sd_dirs, tmp_path):
    pipe = sd.load_sd_pipeline(sd_dirs[0], mode="txt2img", device="cpu")
    assert pipe.safety_checker is None and pipe.unet.dtype == torch.float32
    kw = dict(seed=0, steps=2, guidance=3.0, size=32, batch_size=2, progress=False)
    out = sd.generate_sd(pipe, CAPTIONS, **kw)
    _check_rgb(out, 3)
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    again = sd.generate_sd(pipe, CAPTIONS, resume_dir=tmp_path, **kw)
    assert np.array_equal(_arrays(out), _arrays(again))
    assert len(list(tmp_path.glob("gen-*.tar"))) == 1 and len(again) == 3
    _check_rgb(sd.generate_sd(pipe, CAPTIONS[:1], scheduler="ddim", **kw), 1)


def test_sd_img2img_end_to_end(sd_dirs, data):
    imgs, _ = data
    pipe = sd.load_sd_pipeline(sd_dirs[0], mode="img2img", device="cpu")
    kw = dict(prompts=CAPTIONS, seed=0, steps=2, guidance=3.0, size=32, batch_size=2, strength=0.75, progress=False)
    out = sd.generate_sd(pipe, list(imgs[:3]), **kw)
    _check_rgb(out, 3)
    assert np.array_equal(_arrays(out), _arrays(sd.generate_sd(pipe, list(imgs[:3]), **kw)))
    with pytest.raises(UserError, match="prompts"):
        sd.generate_sd(pipe, list(imgs[:3]), seed=0, steps=2, guidance=3.0, size=32, batch_size=2)


def test_sd_image_variation_end_to_end(sd_dirs, data):
    imgs, _ = data
    pipe = sd.load_sd_pipeline(sd_dirs[1], mode="variation", device="cpu")
    kw = dict(seed=0, steps=2, guidance=3.0, size=32, batch_size=2, progress=False)
    out = sd.generate_sd(pipe, list(imgs[:3]), **kw)
    _check_rgb(out, 3)
    assert np.array_equal(_arrays(out), _arrays(sd.generate_sd(pipe, list(imgs[:3]), **kw)))


def test_sd_load_errors_are_user_errors(sd_dirs, tmp_path):
    with pytest.raises(UserError, match="mode"):
        sd.load_sd_pipeline(sd_dirs[0], mode="inpaint", device="cpu")
    with pytest.raises(UserError, match="cannot load"):
        sd.load_sd_pipeline(tmp_path, mode="txt2img", device="cpu")
    with pytest.raises(UserError, match="cannot load"):
        sd.load_sd_pipeline(sd_dirs[0], mode="variation", device="cpu")
