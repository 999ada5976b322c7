"""selectbench.core.classes: the one reader of data/meta/classes.yaml (known answers)."""
import numpy as np
import pytest
import yaml

from selectbench.core import classes
from selectbench.core.errors import UserError
from selectbench.core.layout import PROJECT


def _write(tmp_path, doc):
    p = tmp_path / "classes.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_groups_give_siblings_and_confusable_set(tmp_path):
    p = _write(tmp_path, {"classes": [{"name": "t-shirt", "synonyms": ["t-shirt", "tee"]}, {"name": "shirt"},
                                      {"name": "bag"}],
                          "confusable_groups": [["t-shirt", "shirt"]]})
    c = classes.load(path=p)
    assert c.names == ["t-shirt", "shirt", "bag"] and len(c) == 3
    assert c.siblings == [[1], [0], []] and c.confusable == {"t-shirt", "shirt"}
    assert c.synonyms[1] == ["shirt"]  # no synonyms: the name itself


def test_one_mention_rule_for_single_captions_and_vectorised(tmp_path):
    p = _write(tmp_path, {"classes": [{"name": "t-shirt", "synonyms": ["t-shirt", "tee"]}, {"name": "shirt"}]})
    c = classes.load(path=p)
    caps = ["Navy T-Shirt", "a shirt and a tee", "shirtless", "t-shirts"]
    want = [{0}, {0, 1}, set(), set()]
    assert [c.mentioned(s) for s in caps] == want
    m = c.mentions(caps)
    assert [set(np.flatnonzero(r)) for r in m] == want


def test_bad_class_lists_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="class list not found"):
        classes.load(path=tmp_path / "absent.yaml")
    with pytest.raises(UserError, match="no classes"):
        classes.load(path=_write(tmp_path, {"classes": []}))
    with pytest.raises(UserError, match=r"confusable_groups name unknown classes \['coat'\]"):
        classes.load(path=_write(tmp_path, {"classes": [{"name": "shirt"}], "confusable_groups": [["shirt", "coat"]]}))


def test_checked_in_list_has_the_simulation_groups():
    c = classes.load(root=PROJECT)
    assert len(c) == 10 and c.confusable == {"t-shirt", "pullover", "dress", "coat", "shirt", "sandal", "sneaker",
                                             "ankle boot"}
