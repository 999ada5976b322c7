"""Bad params and missing inputs: one line on stderr naming the key, exit code 2, no traceback."""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path, edit):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(p)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    (tmp_path / "data/meta").mkdir(parents=True)
    (tmp_path / "data/meta/classes.yaml").write_text((ROOT / "data/meta/classes.yaml").read_text())


def _run(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


@pytest.mark.parametrize("edit, argv, key", [
    (lambda p: None, ["no_such_shift"], "shifts"),
    (lambda p: p["shifts"]["in"].update(strategy="magic"), ["in"], "shifts.in.strategy"),
    (lambda p: p["shifts"]["in"].update(per_class=-3), ["in"], "shifts.in.per_class"),
    (lambda p: p["shifts"]["in"].update(per_class="many"), ["in"], "shifts.in.per_class"),
    (lambda p: p["curation"].update(clip_threshold=1.7), ["la_txt2img"], "curation.clip_threshold"),
    (lambda p: p["shifts"]["hkm"].update(levels=[0, 2]), ["hkm"], "data/embeddings"),
])
def test_curate_param_errors(tmp_path, monkeypatch, capsys, edit, argv, key):
    from stages import curate

    _params(tmp_path, edit)
    monkeypatch.chdir(tmp_path)
    line = _run(curate.main, argv, capsys)
    assert key in line, line
    if "strategy" in key:
        assert "balanced" in line  # names the allowed values


def test_curate_names_the_missing_input(tmp_path, monkeypatch, capsys):
    from stages import curate

    _params(tmp_path, lambda p: None)
    monkeypatch.chdir(tmp_path)
    line = _run(curate.main, ["la_img2img"], capsys)
    assert "data/raw/train.npz" in line or "data/embeddings" in line


def test_train_param_errors(tmp_path, monkeypatch, capsys):
    from stages import train

    _params(tmp_path, lambda p: p["train"].update(class_weighting="sqrt"))
    monkeypatch.chdir(tmp_path)
    line = _run(train.main, ["in", "r1"], capsys)
    assert "train.class_weighting" in line and "inverse_frequency" in line


@pytest.mark.parametrize("stage, argv", [("evaluate", ["in", "r1"]), ("transfer_baseline", ["r1"])])
def test_transfer_protocol_errors(tmp_path, monkeypatch, capsys, stage, argv):
    import importlib

    main = importlib.import_module(f"stages.{stage}").main
    _params(tmp_path, lambda p: p["transfer"].update(protocol="probe"))
    monkeypatch.chdir(tmp_path)
    line = _run(main, argv, capsys)
    assert "transfer.protocol" in line and "finetune, linear" in line
