"""selectbench.evaluation: the natural-shift scoring protocol (known answers)."""
import numpy as np
import pytest

from selectbench.evaluation.utility import natural_predictions


def test_imagenet_r_and_a_are_scored_on_their_own_classes_only():
    # 4 classes; the -R images only cover classes 1 and 2, the -V2 image covers all.
    logits = np.array([[9.0, 1.0, 2.0, 0.0],   # -R, label 2: class 0 (absent from -R) wins overall
                       [0.0, 3.0, 1.0, 8.0],   # -R, label 1: class 3 (absent) wins overall
                       [9.0, 1.0, 2.0, 0.0]])  # -V2, label 2: all classes count
    labels = np.array([2, 1, 2])
    sets = np.array(["imagenet_r", "imagenet_r", "imagenet_v2"])
    assert natural_predictions(logits, labels, sets, {"imagenet_r": [1, 2]}).tolist() == [2, 1, 0]
    # A class the set publishes but the data lacks still competes: with class 3 scored, the second
    # image is wrong, as it is for a model at chance; scoring only the classes present would
    # have made it right (with one class present, every image would be).
    assert natural_predictions(logits, labels, sets, {"imagenet_r": [1, 2, 3]}).tolist() == [2, 3, 0]
    assert natural_predictions(logits, labels, sets).tolist() == [0, 3, 0]  # no restriction given
    assert natural_predictions(logits, labels, None).tolist() == [0, 3, 0]
    assert natural_predictions(logits, labels, np.array(["imagenet_sketch"] * 3)).tolist() == [0, 3, 0]
    assert natural_predictions(np.empty((0, 0)), np.empty(0, int), None).shape == (0,)


def test_a_label_outside_the_scored_classes_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="not among its scored classes"):
        natural_predictions(np.zeros((1, 3)), np.array([0]), np.array(["imagenet_a"]), {"imagenet_a": [1, 2]})


def test_ssl_k_must_stay_below_the_bank():
    from selectbench.core.errors import UserError
    from selectbench.evaluation.describe import ssl_settings

    ok = {"evaluate": {"ssl_shots": [5, 10], "ssl_k": [5, 10, 20]}}
    assert ssl_settings(ok, 10) == ([5, 10], [5, 10, 20])
    with pytest.raises(UserError, match=r"evaluate.ssl_k: k = 50 is not below the smallest bank \(5 shots x 10"):
        ssl_settings({"evaluate": {"ssl_shots": [5, 10], "ssl_k": [10, 50]}}, 10)
    with pytest.raises(UserError, match="evaluate.ssl_shots"):
        ssl_settings({"evaluate": {"ssl_shots": [], "ssl_k": [5]}}, 10)


def test_shift_images_read_slices_in_index_order(tmp_path, monkeypatch):
    """describe's lazy view: any slice or row array of the index gives the images of those rows,
    in index order, each source read in ascending row order."""
    import pandas as pd

    from selectbench.evaluation import describe

    pool = np.arange(10, dtype=np.uint8).repeat(4).reshape(10, 2, 2)
    train = (100 + np.arange(6, dtype=np.uint8)).repeat(4).reshape(6, 2, 2)
    reads = []

    class Lazy:
        def __init__(self, a):
            self.a = a

        def __getitem__(self, rows):
            assert (np.diff(rows) >= 0).all()
            reads.append(len(rows))
            return self.a[rows]

    index = pd.DataFrame({"source": ["pool", "train", "pool", "pool", "train"], "row": [7, 5, 2, 9, 0]})
    monkeypatch.setattr(describe.context, "image_arrays", lambda idx, d: {"pool": Lazy(pool), "train": Lazy(train)})
    view = describe.ShiftImages("s", index)
    assert len(view) == 5
    assert view[0:5][:, 0, 0].tolist() == [7, 105, 2, 9, 100]
    assert view[1:3][:, 0, 0].tolist() == [105, 2]
    assert view[np.array([3, 0])][:, 0, 0].tolist() == [9, 7]


def _two_tone(n: int, seed: int):
    """Class 0 dark, class 1 bright 28 px grey images with noise: separable by any pooled feature."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.clip(rng.normal(60 + 140 * y[:, None, None], 20, (n, 28, 28)), 0, 255).astype(np.uint8)
    return x, y


def test_linear_probe_trains_a_head_only_and_separates_easy_classes():
    import timm
    import torch

    from selectbench.evaluation.utility import finetune

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (x, y), (tx, ty) = _two_tone(64, 0), _two_tone(40, 1)
    cfg = {"protocol": "linear", "steps": 60, "batch_size": 16, "lr": 0.01}
    correct = finetune(model, x, y, tx, ty, 2, cfg, {"img_size": 32, "in_chans": 1}, seed=3)
    assert correct.dtype == bool and correct.shape == (40,)
    assert correct.all()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: the probe never touches it
    # The same seed gives the same items; full fine-tuning is another protocol with other numbers.
    again = finetune(model, x, y, tx, ty, 2, cfg, {"img_size": 32, "in_chans": 1}, seed=3)
    assert (again == correct).all()


def test_transfer_protocol_is_checked_before_any_work():
    from selectbench.core.errors import UserError
    from selectbench.evaluation.evaluate import transfer_config

    base = {"tasks": ["mnist"], "protocol": "linear", "steps": 10, "batch_size": 8, "lr": 0.01}
    assert transfer_config({"transfer": base})["protocol"] == "linear"
    with pytest.raises(UserError, match=r"transfer.protocol: unknown value 'probe'; allowed: finetune, linear"):
        transfer_config({"transfer": {**base, "protocol": "probe"}})
    with pytest.raises(UserError, match=r"transfer.steps: must be >= 1"):
        transfer_config({"transfer": {**base, "steps": 0}})


@pytest.mark.parametrize("passing, ran, choice", [
    ({("finetune", 1000)}, 2, {"protocol": "finetune", "steps": 1000}),
    ({("finetune", 200), ("linear", 1000)}, 1, {"protocol": "finetune", "steps": 200}),
    (set(), 3, None),
])
def test_transfer_rule_takes_the_first_candidate_above_the_margin(tmp_path, monkeypatch, passing, ran, choice):
    """docs/simulation.md section 16: candidates in their fixed order on the calibration seed; the
    first that qualifies is the choice and later ones are not run; none leaves transfer unvalidated."""
    import json

    from bench import transfer_baseline as tb

    calls = []

    def fake(p, shift, protocol, steps, seed):
        calls.append((protocol, steps, seed))
        return {"protocol": protocol, "steps": steps, "qualifies": (protocol, steps) in passing}

    monkeypatch.setattr(tb, "calibrate", fake)
    out = tmp_path / "rule.json"
    tb.main(["--rule", "--out", str(out)])
    assert calls == [(pr, st, 101) for pr, st in tb.CANDIDATES[:ran]]
    assert json.loads(out.read_text())["choice"] == choice
