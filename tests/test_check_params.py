"""Invalid params: an unknown key (check_params stage), a wrong type and an out-of-range value (the
stage reading the key) each stop `dvc exp run -S` with one line naming the key, no traceback."""
import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from selectbench.core.errors import UserError
from selectbench.core.params import check, derive_keys_from, load_keys
from tests.project import ALWAYS, DVC, ROOT, inside, make_project, project_env
from tests.tiny import tiny_params, write

DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def _edit(fn) -> dict:
    p = copy.deepcopy(DEFAULT)
    fn(p)
    return p


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def test_keys_file_is_current():
    # Fails after a key is added to params.yaml / params-full.yaml: run
    # `python -m stages.check_params --write-keys` and commit selectbench/params_keys.yaml.
    assert load_keys() == derive_keys_from(ROOT)


def test_default_tiny_and_full_profiles_pass():
    check(DEFAULT)
    check(tiny_params(ROOT / "params.yaml"))
    check(_deep_merge(DEFAULT, yaml.safe_load((ROOT / "params-full.yaml").read_text())))
    check(_deep_merge(DEFAULT, yaml.safe_load((ROOT / "params-full-smoke.yaml").read_text())))
    # Open subtrees (library kwargs), a new shift of a known strategy, a strategy of one's own.
    check(_edit(lambda p: p["generator"]["unet"].update(dropout=0.1)))
    check(_edit(lambda p: p["shifts"].update(in_small={"strategy": "balanced", "uses": "curation.seed",
                                                       "per_class": 10, "seed": 1, "subsample": 0.5})))
    check(_edit(lambda p: p["shifts"].update(mine={"strategy": "my_new_strategy", "anything": 1})))


@pytest.mark.parametrize("edit, msg", [
    (lambda p: p["train"].update(lrr=0.1), "train.lrr: unknown key; did you mean train.lr?"),
    (lambda p: p.update(trian={"lr": 0.1}), "trian: unknown section; did you mean train?"),
    (lambda p: p["pool"]["captions"].update(synonim_rate=0.1),
     "pool.captions.synonim_rate: unknown key; did you mean pool.captions.synonym_rate?"),
    (lambda p: p["shifts"]["in"].update(per_clas=3),
     "shifts.in.per_clas: unknown key for strategy balanced; did you mean shifts.in.per_class?"),
    (lambda p: p["shifts"]["la_txt2img_balanced"]["rebalance"].update(nn=3),
     "shifts.la_txt2img_balanced.rebalance.nn: unknown key; did you mean shifts.la_txt2img_balanced.rebalance.n?"),
    (lambda p: p["shifts"]["la_txt2img"].update(k=3), "shifts.la_txt2img.k: unknown key for strategy txt2img;"),
    (lambda p: p.update(train=5), "train: expected a mapping of"),
])
def test_unknown_key_names_it_and_the_closest_known_one(edit, msg):
    with pytest.raises(UserError) as e:
        check(_edit(edit))
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_stage_exits_2_with_one_line(tmp_path, capsys):
    from stages import check_params

    params = tmp_path / "params.yaml"
    write(_edit(lambda p: p["corrupt"].update(sed=1)), params)
    with pytest.raises(SystemExit) as e:
        check_params.main(["--params", str(params), "--out", str(tmp_path / "ok")])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "error: corrupt.sed: unknown key; did you mean corrupt.seed?"
    assert not (tmp_path / "ok").exists()


@pytest.fixture(scope="module")
def proj(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("params"), tiny_params(ROOT / "params.yaml", shifts=("in",)))


def _exp_run(d: Path, *sets: str) -> str:
    """`dvc exp run -S ... download` (check_params + download only); params.yaml restored after."""
    args = [a for s in sets for a in ("-S", s)]
    r = subprocess.run([DVC, "exp", "run", *args, "download"], cwd=d, env={**os.environ, **project_env(d)},
                       capture_output=True, text=True)
    subprocess.run(["git", "checkout", "-q", "--", "params.yaml"], cwd=d, check=True)
    assert r.returncode != 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    return out


@pytest.mark.integration
@pytest.mark.parametrize("override, line", [
    ("+train.lrr=0.1", "error: train.lrr: unknown key; did you mean train.lr?"),            # unknown key
    ("+shifts.in.seeed=1", "error: shifts.in.seeed: unknown key for strategy balanced; did you mean shifts.in.seed?"),
    ("data.seed=abc", "error: data.seed: expected int, got str 'abc'"),                        # wrong type
    ("data.base_reserve=0", "error: data.base_reserve: must be >= 1, got 0"),                  # out of range
])
def test_dvc_exp_run_set_param_errors_are_one_line(proj, override, line):
    out = _exp_run(proj, override)
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert errors == [line], out


@pytest.mark.integration
def test_dvc_itself_refuses_a_misspelt_key_without_plus(proj):
    out = _exp_run(proj, "train.lrr=0.1")
    assert "train.lrr" in out and "Running stage" not in out


@pytest.mark.integration
def test_valid_param_change_reruns_nothing_downstream_of_the_check(proj):
    from dvc.repo import Repo

    with inside(proj):
        repo = Repo(str(proj))
        assert {s.addressing for s in repo.reproduce("download")} == {"check_params", "download"} | ALWAYS
        ok = (proj / "data/params.ok").read_bytes()
        p = yaml.safe_load((proj / "params.yaml").read_text())
        p["train"]["lr"] = 0.05  # read by train@*, not by download
        write(p, proj / "params.yaml")
        assert {s.addressing for s in repo.reproduce("download")} == {"check_params"} | ALWAYS
        assert (proj / "data/params.ok").read_bytes() == ok
        p["trainn"] = {"lr": 0.1}
        write(p, proj / "params.yaml")
        with pytest.raises(Exception, match="check_params"):
            repo.reproduce("download")


def test_apply_merges_a_profile_keeping_comments(tmp_path):
    from stages.check_params import main

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    assert main(["--apply", str(ROOT / "params-full.yaml"), "--params", str(params)]) == 0
    text = params.read_text()
    merged = yaml.safe_load(text)
    full = yaml.safe_load((ROOT / "params-full.yaml").read_text())
    assert merged["profile"] == "full" and merged["train"]["model"] == full["train"]["model"]
    assert merged["full"]["laion"]["root"] == full["full"]["laion"]["root"]
    assert merged["pool"] == yaml.safe_load((ROOT / "params.yaml").read_text())["pool"]  # untouched sections stay
    assert "# The web-like pool" in text  # comments survive
    check(merged)
