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
