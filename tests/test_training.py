"""Shards and the shared timm recipe: weighting, determinism, resume, DDP, safe loading."""
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from selectbench.core import shards
from selectbench.core.errors import UserError
from selectbench.models import checkpoint, training

CFG = {"model": "test_resnet", "img_size": 32, "budget": "steps", "epochs": 1, "steps": 12, "batch_size": 16,
       "opt": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 2e-5, "sched": "cosine", "warmup_epochs": 1, "warmup_steps": 2,
       "min_lr": 0.0, "mixup": 0.2, "cutmix": 1.0, "label_smoothing": 0.1, "scale": [0.6, 1.0], "hflip": 0.5,
       "class_weighting": "none", "effective_beta": 0.999, "shuffle_buffer": 50, "workers": 1, "ckpt_every": 5,
       "seed": 0, "nproc": 1}


def make_shards(d: Path, n=120, classes=4, per_shard=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    # Class-dependent brightness so a few steps already learn something.
    imgs = (rng.random((n, 28, 28)) * 60 + labels[:, None, None] * 45).astype(np.uint8)
    sizes = shards.write_shards(((f"{i:06d}", imgs[i], int(labels[i]), {"i": i}) for i in range(n)), d, per_shard)
    return labels, sizes


def digest(model, params_only=False):
    h = hashlib.sha256()
    # BatchNorm buffers are per-replica under DDP (synced from rank 0 at each forward), so the
    # DDP check compares learned parameters only.
    items = model.named_parameters() if params_only else model.state_dict().items()
    for k, v in sorted(items):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_shards_are_byte_deterministic_and_readable(tmp_path):
    labels, sizes = make_shards(tmp_path / "a")
    make_shards(tmp_path / "b")
    assert sizes == {"shard-000000.tar": 40, "shard-000001.tar": 40, "shard-000002.tar": 40}
    for name in sizes:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    urls, _ = shards.shard_urls(tmp_path / "a")
    got = list(shards.iter_samples(urls))
    assert [c for _, _, c in got] == labels.tolist()
    assert shards.decode_png(got[0][1]).shape == (28, 28)
    assert not (tmp_path / "a.partial").exists()


def test_fast_tar_reader_matches_webdataset_and_falls_back(tmp_path):
    import io
    import tarfile

    import webdataset as wds

    make_shards(tmp_path / "a", n=50, per_shard=20)
    urls, _ = shards.shard_urls(tmp_path / "a")
    ref = list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))
    got = list(shards.tar_samples(urls))
    assert [{k: v for k, v in s.items() if not k.startswith("__")} for s in got] == \
        [{k: v for k, v in s.items() if not k.startswith("__")} for s in ref]
    assert [s["__key__"] for s in got] == [s["__key__"] for s in ref]
    # a GNU tar with a long member name (not plain USTAR) goes through tarfile
    long_key = "x" * 120
    gnu = tmp_path / "gnu.tar"
    with tarfile.open(gnu, "w", format=tarfile.GNU_FORMAT) as tar:
        for ext, data in (("png", shards.png_bytes(np.zeros((28, 28), np.uint8))), ("cls", b"3")):
            info = tarfile.TarInfo(f"{long_key}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert [(k, c) for k, _, c in shards.iter_samples([str(gnu)])] == [(long_key, 3)]
    # a truncated shard is an error, not a silently short epoch
    cut = tmp_path / "cut.tar"
    cut.write_bytes(Path(urls[0]).read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated"):
        list(shards.tar_samples([str(cut)]))


def test_class_weights_modes_and_absent_classes():
    counts = np.array([100, 10, 0, 1])
    for mode in training.WEIGHTINGS:
        w = training.class_weights(counts, mode)
        assert np.all(np.isfinite(w)) and w[2] == 0
        assert w[[0, 1, 3]].mean() == pytest.approx(1.0)
    w = training.class_weights(counts, "inverse_frequency")
    assert w[1] / w[0] == pytest.approx(10.0)
    w = training.class_weights(counts, "effective_number", beta=0.9)
    assert w[3] > w[1] > w[0]
    assert np.all(training.class_weights(np.zeros(3), "inverse_frequency") == 0)
    with pytest.raises(UserError):
        training.class_weights(counts, "bogus")


def test_weighted_soft_ce_reduces_to_weighted_ce():
    logits = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w = torch.tensor([1.0, 2.0, 0.5])
    got = training.weighted_soft_ce(logits, torch.nn.functional.one_hot(y, 3).float(), w)
    want = torch.nn.functional.cross_entropy(logits, y, weight=w)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_check_config_names_the_key():
    with pytest.raises(UserError, match="train.lr"):
        training.check_config({**CFG, "lr": "fast"})
    with pytest.raises(UserError, match="train.class_weighting"):
        training.check_config({**CFG, "class_weighting": "sqrt"})
    with pytest.raises(UserError, match="train.bogus"):
        training.check_config({**CFG, "bogus": 1})
    with pytest.raises(UserError, match="train.model"):
        training.check_config({**CFG, "model": "no_such_net"})


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    labels, sizes = make_shards(tmp_path / "s")
    urls, sizes = shards.shard_urls(tmp_path / "s")
    counts = np.bincount(labels, minlength=4)
    full, summary = training.train(urls, sizes, counts, CFG, tmp_path / "ck_full")
    again, _ = training.train(urls, sizes, counts, CFG, None)
    assert digest(full) == digest(again)
    # Kill-equivalent: stop after 7 steps (checkpoint at 5), then rerun to the end.
    ck = tmp_path / "ck"
    ck.mkdir()
    training.train(urls, sizes, counts, CFG, ck, stop_after=7)
    assert (ck / "last.pt").exists()
    resumed, _ = training.train(urls, sizes, counts, CFG, ck)
    assert digest(resumed) == digest(full)
    assert summary["steps"] == 12 and np.isfinite(summary["final_loss"])
    # A checkpoint from other params is not resumed from.
    other = {**CFG, "lr": 0.01}
    assert checkpoint.load(ck, training.fingerprint(other, sizes, 4), "train") is None


def test_kill_after_the_last_step_resumes_to_the_same_summary(tmp_path):
    # Killed after the last step, before the stage wrote the model: the rerun must not resume
    # from a checkpoint with no step left to run (final_loss came out NaN).
    make_shards(tmp_path / "s")
    urls, sizes = shards.shard_urls(tmp_path / "s")
    counts = np.ones(4)
    cfg = {**CFG, "ckpt_every": 6}  # divides the 12 steps
    full, summary = training.train(urls, sizes, counts, cfg, None)
    ck = tmp_path / "ck"
    training.train(urls, sizes, counts, cfg, ck, stop_after=12)
    resumed, again = training.train(urls, sizes, counts, cfg, ck)
    assert digest(resumed) == digest(full)
    assert again["final_loss"] == summary["final_loss"] and np.isfinite(again["final_loss"])


def test_tampered_checkpoint_is_refused(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "last.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    assert checkpoint.load(tmp_path, "00", "train") is None
    assert not (tmp_path / "pwned").exists()
    assert "ignoring unreadable checkpoint" in capsys.readouterr().err


def test_ddp_two_cpu_processes(tmp_path):
    make_shards(tmp_path / "s", n=128)
    script = (
        "import sys, numpy as np, torch.distributed as dist;"
        "from selectbench.core import shards; from selectbench.models import training;"
        "from tests.test_training import CFG, digest;"
        "dist.init_process_group('gloo');"
        "urls, sizes = shards.shard_urls(sys.argv[1]);"
        "m, s = training.train(urls, sizes, np.ones(4), {**CFG, 'steps': 4}, None, rank=dist.get_rank(), world=2);"
        # one file per rank: two ranks printing to one pipe can interleave their lines
        "open(sys.argv[1] + f'/../digest{dist.get_rank()}', 'w').write(f'{digest(m, True)} {s[\"world\"]}');"
        "dist.destroy_process_group()"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "--no-python", sys.executable, "-c", script, str(tmp_path / "s")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [(tmp_path / f"digest{rank}").read_text().split() for rank in (0, 1)]
    assert lines[0][0] == lines[1][0], "DDP replicas diverged"
    assert lines[0][1] == lines[1][1] == "2"


def test_shard_writer_killed_midway_leaves_no_partial_output(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (90, 28, 28), dtype=np.uint8)

    def samples(fail_at=None):
        for i in range(90):
            if i == fail_at:
                raise KeyboardInterrupt  # stands in for a kill between two samples
            yield f"{i:06d}", imgs[i], i % 3, {}

    shards.write_shards(samples(), tmp_path / "ref", 40)
    with pytest.raises(KeyboardInterrupt):
        shards.write_shards(samples(fail_at=55), tmp_path / "out", 40)
    assert not (tmp_path / "out").exists()  # only a .partial dir, never a plausible shard set
    shards.write_shards(samples(), tmp_path / "out", 40)
    for f in sorted((tmp_path / "ref").iterdir()):
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes()


def test_empty_shift_is_skipped_explicitly_and_reported(tmp_path, monkeypatch, capsys):
    """A curation that yields zero images: train writes an explicit 'skipped' record (no crash),
    load_model returns no model with the reason, and the report shows the shift as not trained."""
    import yaml

    from selectbench.evaluation.report import runs, tables
    from stages import train as train_stage

    monkeypatch.chdir(tmp_path)
    shards.write_shards(iter(()), "data/shards/empty", 10, total=0)
    Path("data/curated/empty").mkdir(parents=True)
    Path("data/curated/empty/stats.json").write_text('{"count_per_class": [0, 0, 0, 0]}')
    Path("params.yaml").write_text(yaml.safe_dump({"train": CFG}))
    train_stage.main(["empty", "r1"])
    assert "train@empty-r1: skipped (0 samples for 1 rank(s))" in capsys.readouterr().out
    model, args = training.load_model("models/empty/r1")
    assert model is None and args["skipped"].startswith("0 samples")
    sh = {"in": runs.Shift("in", None, {"r1": None}),
          "empty": runs.Shift("empty", {"images": 0}, {"r1": {"status": f"not trained: {args['skipped']}"}})}
    util = tables.utility_table(sh, tables.intervals(sh, 0.95))
    assert "not trained" in util.loc["empty", "status"] and np.isnan(util.loc["empty", "top1"])
    assert util.loc["in", "status"] == "missing"


def test_shift_smaller_than_a_batch_trains_on_its_partial_batch(tmp_path, monkeypatch, capsys):
    """5 images, batch 16: the last partial batch is kept, so every step sees all 5 (odd size: no mixup)."""
    import yaml

    from stages import train as train_stage

    monkeypatch.chdir(tmp_path)
    labels, _ = make_shards(Path("data/shards/tiny"), n=5, per_shard=5)
    Path("data/curated/tiny").mkdir(parents=True)
    Path("data/curated/tiny/stats.json").write_text(f'{{"count_per_class": {np.bincount(labels, minlength=4).tolist()}}}')
    Path("params.yaml").write_text(yaml.safe_dump({"train": {**CFG, "steps": 4, "ckpt_every": 0}}))
    train_stage.main(["tiny", "r1"])
    assert "train@tiny-r1: 4 steps" in capsys.readouterr().out
    model, args = training.load_model("models/tiny/r1")
    assert model is not None and args["steps_per_epoch"] == 1 and args["samples"] == 5
    assert np.isfinite(args["final_loss"])


def test_replicates_train_with_their_own_seeds(tmp_path, monkeypatch):
    """Two replicates of one shift: different derived seeds and weights; a replicate rerun is identical."""
    import yaml

    from stages import train as train_stage

    monkeypatch.chdir(tmp_path)
    labels, _ = make_shards(Path("data/shards/s"), n=48, per_shard=16)
    Path("data/curated/s").mkdir(parents=True)
    Path("data/curated/s/stats.json").write_text(f'{{"count_per_class": {np.bincount(labels, minlength=4).tolist()}}}')
    Path("params.yaml").write_text(yaml.safe_dump({"train": {**CFG, "steps": 2, "ckpt_every": 0}}))
    seen = {}
    for rep in ("r1", "r2", "r1"):
        train_stage.main(["s", rep])
        model, args = training.load_model(f"models/s/{rep}")
        seen.setdefault(rep, []).append((args["train"]["seed"], digest(model)))
    assert seen["r1"][0] == seen["r1"][1]
    assert seen["r1"][0][0] != seen["r2"][0][0] and seen["r1"][0][1] != seen["r2"][0][1]


def make_rgb_shards(d: Path, n=48, classes=4, per_shard=16, size=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    # Class-dependent hue: the label is in the colour, not the brightness.
    imgs = (rng.random((n, size, size, 3)) * 60).astype(np.uint8)
    imgs[np.arange(n), :, :, labels % 3] += 150
    sizes = shards.write_shards(((f"{i:06d}", imgs[i], int(labels[i]), {"i": i}) for i in range(n)), d, per_shard)
    return imgs, labels, sizes


class LazyImages:
    """A loader that only hands out slices (no __array__), recording each one's length."""

    def __init__(self, imgs):
        self.imgs, self.served = imgs, []

    def __len__(self):
        return len(self.imgs)

    def __getitem__(self, s):
        assert isinstance(s, slice), "predict must read batches, not the whole set"
        rows = [self.imgs[i] for i in range(*s.indices(len(self)))]
        self.served.append(len(rows))
        return rows


def test_rgb_shards_are_jpg_deterministic_and_decode_to_rgb(tmp_path):
    imgs, labels, sizes = make_rgb_shards(tmp_path / "a", n=8, per_shard=5)
    make_rgb_shards(tmp_path / "b", n=8, per_shard=5)
    assert sizes == {"shard-000000.tar": 5, "shard-000001.tar": 3}
    for name in sizes:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    urls, _ = shards.shard_urls(tmp_path / "a")
    assert {name.rsplit(".", 1)[1] for name, _ in shards.tar_members(urls[0])} == {"jpg", "cls", "json"}
    got = list(shards.iter_samples(urls))
    assert [c for _, _, c in got] == labels.tolist()
    rgb = shards.decode_image(got[0][1], "RGB")
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    # Lossy (chroma subsampled, noisy pixels), but each channel's level and the order survive.
    assert np.abs(rgb.mean((0, 1)) - imgs[0].mean((0, 1))).max() < 2
    assert shards.decode_image(got[0][1], "L").shape == (40, 40)
    for bad in (np.zeros((40, 40, 4), np.uint8), np.zeros((40, 40, 3), np.float32), np.zeros((2, 40, 40, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"shape \(" + ", ".join(map(str, bad.shape))):
            shards.write_shards([("000000", bad, 0, {})], tmp_path / "bad", 4)


def test_check_config_in_chans_is_optional_and_1_or_3():
    assert "in_chans" not in training.check_config(dict(CFG))
    assert training.check_config({**CFG, "in_chans": 3})["in_chans"] == 3
    for bad in (2, 0, True, 3.0, "rgb"):
        with pytest.raises(UserError, match="train.in_chans"):
            training.check_config({**CFG, "in_chans": bad})


def test_model_input_channel_conversion():
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (3, 20, 20), dtype=np.uint8)
    # grey -> RGB model: the three channels are the grey image, normalised per channel
    x = training.model_input(grey, 20, 3, antialias=True)
    mean, std = training.norm_stats(3)
    assert x.shape == (3, 3, 20, 20)
    for c in range(3):
        np.testing.assert_allclose(x[:, c].numpy() * std[c] + mean[c], grey / 255, atol=1e-6)
    # RGB -> grey model: ITU-R 601 luma, as PIL's convert("L") up to its integer rounding
    luma = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    x = training.model_input(rgb, 20, 1, antialias=True)
    np.testing.assert_allclose(x[:, 0].numpy() * training.STD[0] + training.MEAN[0], luma / 255, atol=1.01 / 255)


def test_rgb_training_run_loads_and_predicts(tmp_path, monkeypatch, capsys):
    """The train stage picks the channel count from the shard summary, records it in args.yaml,
    and load_model + predict serve RGB arrays, lazy loaders and grey batches."""
    import yaml

    from stages import train as train_stage

    monkeypatch.chdir(tmp_path)
    imgs, labels, _ = make_rgb_shards(Path("data/shards/rgb"))
    Path("data/shards/rgb/summary.json").write_text('{"samples": 48, "shards": 3, "channels": 3}')
    Path("data/curated/rgb").mkdir(parents=True)
    counts = np.bincount(labels, minlength=4).tolist()
    Path("data/curated/rgb/stats.json").write_text(f'{{"count_per_class": {counts}}}')
    Path("params.yaml").write_text(yaml.safe_dump({"train": {**CFG, "steps": 3, "ckpt_every": 0}}))
    train_stage.main(["rgb", "r1"])
    assert "train@rgb-r1: 3 steps" in capsys.readouterr().out
    model, args = training.load_model("models/rgb/r1")
    assert args["train"]["in_chans"] == 3
    stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem.in_channels == 3
    cfg = args["train"]
    want = training.predict(model, imgs, cfg, batch=20)
    assert want.shape == (48, 4) and np.all(np.isfinite(want))
    lazy = LazyImages(imgs)
    np.testing.assert_array_equal(training.predict(model, lazy, cfg, batch=20), want)
    assert lazy.served == [20, 20, 8]
    grey = imgs[:5, :, :, 0]
    as_rgb = np.repeat(grey[..., None], 3, -1)
    np.testing.assert_allclose(training.predict(model, grey, cfg), training.predict(model, as_rgb, cfg),
                               rtol=1e-5, atol=1e-6)
    # A params value that contradicts the shards is refused, naming the key.
    Path("params.yaml").write_text(yaml.safe_dump({"train": {**CFG, "in_chans": 1}}))
    with pytest.raises(SystemExit):
        train_stage.main(["rgb", "r1"])
    assert "train.in_chans: 1, but data/shards/rgb holds 3-channel images" in capsys.readouterr().err


def test_decode_cache_keeps_what_fits_and_serves_it_again():
    cache = training.DecodeCache(budget=2000)
    calls = []

    def make(i):
        calls.append(i)
        return np.zeros(784, np.uint8), i

    for i in (0, 1, 2, 0, 1, 2):
        assert cache.get_or(f"k{i}", lambda i=i: make(i))[1] == i
    assert calls == [0, 1, 2, 2]  # two images fit in 2,000 bytes; the third is decoded each time
    assert cache.left == 2000 - 2 * 784


# ------------------------------------------------------------------------------ one recipe
def test_step_budget_gives_every_shift_the_same_learning_rate_curve():
    """Shifts of 500 to 5,399 images (the default's extremes) and one smaller than a batch: with a
    step budget, warm-up and cosine horizon are in steps, so the curves are identical."""
    cfg = {**CFG, "steps": 200, "batch_size": 64, "lr": 0.1, "warmup_steps": 20}
    curves = [training.lr_curve(cfg, n) for n in (40, 500, 2000, 5399)]
    for c in curves[1:]:
        assert c == curves[0]
    c = np.array(curves[0])
    assert len(c) == 200
    # timm's cosine spans the whole budget, warm-up included: it takes over at step 20 of 200.
    assert c.argmax() == 20 and c[20] == pytest.approx(0.05 * (1 + np.cos(np.pi * 20 / 200)))
    assert c[0] == pytest.approx(0.1 * 1e-3)
    assert (np.diff(c[:21]) > 0).all() and (np.diff(c[20:]) <= 0).all()
    assert c[-1] < 0.1 * 1e-3


def test_epoch_budget_scales_with_the_dataset():
    """SELECT's recipe: epochs, so a bigger shift gets more updates and a longer warm-up."""
    cfg = {**CFG, "budget": "epochs", "epochs": 3, "batch_size": 10, "warmup_epochs": 1}
    small, big = training.lr_curve(cfg, 100), training.lr_curve(cfg, 300)
    assert (len(small), len(big)) == (30, 90)
    # The peak is warm-up's last update: one epoch, 10 updates for the small set, 30 for the big one.
    assert int(np.argmax(small)) == 9 and int(np.argmax(big)) == 29


def test_warmup_steps_is_validated():
    with pytest.raises(UserError, match="train.warmup_steps"):
        training.check_config({**CFG, "warmup_steps": -1})
    cfg = dict(CFG)
    del cfg["warmup_steps"]
    with pytest.raises(UserError, match="train.warmup_steps"):
        training.check_config(cfg)
