"""The judges (selectbench.models.judge): the SimCLR loss by hand, seeded training, the model
contract, published weights from a local file, and one-line errors."""
import json
import math

import numpy as np
import pytest
import torch

from selectbench.core.errors import UserError
from selectbench.models import judge

ENC = {"model": "test_resnet", "img_size": 16, "steps": 3, "batch_size": 8, "lr": 0.05, "temperature": 0.2,
       "dim": 8, "scale": [0.3, 1.0], "jitter": 0.4, "seed": 0}
CLF = {"model": "test_resnet", "img_size": 16, "steps": 3, "batch_size": 8, "lr": 0.05, "scale": [0.6, 1.0], "seed": 0}


def _images(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 12, 12), dtype=np.uint8), np.arange(n) % 3


def test_nt_xent_known_answers():
    one = torch.tensor([[1.0, 0.0]])
    assert float(judge.nt_xent(one, one, 0.5)) == pytest.approx(0.0)  # the partner is the only candidate
    z = torch.eye(2)
    # each view: partner at cosine 1, the two others at 0 -> -log(e / (e + 2)) at temperature 1
    assert float(judge.nt_xent(z, z, 1.0)) == pytest.approx(math.log((math.e + 2) / math.e))


def test_training_is_seeded_and_learns_nothing_from_labels_for_the_encoder():
    x, y = _images()
    a = judge.train_encoder(x, ENC)
    b = judge.train_encoder(x, ENC)
    fa, fb = (judge.features(m, x, {"img_size": 16, "in_chans": 1}) for m in (a, b))
    np.testing.assert_array_equal(fa, fb)
    assert fa.shape == (24, a.num_features)
    c = judge.train_classifier(x, y, 3, CLF)
    p = judge.probabilities(c, x, {"img_size": 16, "in_chans": 1})
    assert p.shape == (24, 3) and np.allclose(p.sum(1), 1.0)


def test_save_load_roundtrip(tmp_path):
    x, y = _images()
    params = {"judge": {"kind": "trained", "classifier": CLF}}
    cfg = judge.settings(params, "classifier", 1, 3)
    model = judge.train_classifier(x, y, 3, cfg["params"])
    judge.save(model, cfg, tmp_path / "clf")
    back, cfg2 = judge.load(tmp_path / "clf")
    assert cfg2 == json.loads(json.dumps(cfg))
    np.testing.assert_array_equal(judge.features(model.eval(), x, cfg), judge.features(back, x, cfg2))


def test_published_weights_load_from_a_local_file(tmp_path):
    """The full profile's path: a timm model by name with its weights file, no download."""
    import timm
    from safetensors.torch import save_file

    ref = timm.create_model("test_resnet", pretrained=False, num_classes=0, in_chans=3).eval()
    weights = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, weights)
    params = {"judge": {"kind": "pretrained",
                        "pretrained": {"encoder": {"model": "test_resnet", "weights": str(weights), "img_size": 16}}}}
    cfg = judge.settings(params, "encoder", 1, 10)
    assert cfg["in_chans"] == 3 and cfg["num_classes"] == 0
    judge.write_config(cfg, tmp_path / "encoder")
    model, cfg = judge.load(tmp_path / "encoder")
    x = np.random.default_rng(1).integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(judge.features(model, x, cfg), judge.features(ref, x, cfg), rtol=1e-5, atol=1e-6)


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"judge.pretrained.encoder.weights: file not found: /no/such.safetensors"):
        judge.settings({"judge": {"kind": "pretrained", "pretrained": {
            "encoder": {"model": "test_resnet", "weights": "/no/such.safetensors", "img_size": 16}}}}, "encoder", 1, 10)
    with pytest.raises(UserError, match="judge.encoder.steps"):
        judge.settings({"judge": {"kind": "trained", "encoder": {**ENC, "steps": 0}}}, "encoder", 1, 10)
    with pytest.raises(UserError, match="judge.kind"):
        judge.settings({"judge": {"kind": "borrowed"}}, "encoder", 1, 10)
    with pytest.raises(UserError, match="no judge here"):
        judge.load(tmp_path / "missing")
