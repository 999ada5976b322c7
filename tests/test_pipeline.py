"""Integration: the DVC pipeline on a tiny profile in a temporary git repo; what reran, and when."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.project import ALWAYS, DVC, GIT, ROOT, UP_TO_DATE, inside, make_project
from tests.tiny import tiny_params, write

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="needs Debian data")]


def _names(stages) -> set[str]:
    return {s.addressing for s in stages}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = make_project(tmp_path_factory.mktemp("proj"), tiny_params(ROOT / "params.yaml"))
    from dvc.repo import Repo

    with inside(d):
        repo = Repo(str(d))
        first = repo.reproduce()
        yield d, repo, first


def test_first_run_builds_everything(project):
    d, _, first = project
    names = _names(first)
    for shift in ("in", "la_txt2img", "sd_img2img"):
        for stage in ("curate", "shard", "describe", "train@{}-r1", "train@{}-r2", "evaluate@{}-r1", "evaluate@{}-r2"):
            assert (stage.format(shift) if "{}" in stage else f"{stage}@{shift}") in names
    assert "report" in names
    assert (d / "reports/results/index.md").exists()
    assert (d / "reports/results/class_counts.png").stat().st_size > 1000
    for rep in ("r1", "r2"):
        m = yaml.safe_load((d / f"reports/metrics/in/{rep}.json").read_text())
        assert m["status"] == "ok" and 0 <= m["top1"] <= 1
    summary = yaml.safe_load((d / "reports/summary.json").read_text())
    top1 = summary["in"]["top1"]
    assert top1["n"] == 2 and top1["lo"] <= top1["mean"] <= top1["hi"] and set(top1["replicates"]) == {"r1", "r2"}
    found = yaml.safe_load((d / "reports/results/findings.json").read_text())
    assert found and all(f["verdict"] in ("holds", "does not hold", "inconclusive") and f["rule"] for f in found)
    assert [f["control"] for f in found if f.get("control") == "transfer"] == ["transfer"]
    for rep in ("r1", "r2"):  # the untrained network's transfer, paired with `in`'s by seed and test item
        base = yaml.safe_load((d / f"reports/baseline/{rep}.json").read_text())
        assert base["init"] == "random" and 0 <= base["transfer"]["mean"] <= 1
    assert len(list((d / "data/shards/in").glob("*.tar"))) >= 1


def test_audit_flags_are_left_out_of_every_shard(project):
    """The contamination audit ran once over all shifts; each shard holds its curated items minus
    exactly the flagged ones, and the report has the leakage table."""
    import pandas as pd

    d, _, first = project
    assert "audit" in _names(first)
    audit = json.loads((d / "data/audit/summary.json").read_text())
    assert {"test", "corrupted", "natural"} <= set(audit["sets"]) and audit["remove"] is True
    for shift, v in audit["shifts"].items():
        flagged = pd.read_parquet(d / f"data/audit/{shift}.parquet")
        assert v["flagged_items"] == flagged["position"].nunique()
        shard = json.loads((d / f"data/shards/{shift}/summary.json").read_text())
        assert shard["contaminated_removed"] == v["flagged_items"]
        assert shard["samples"] == v["items"] - v["flagged_items"] - sum(shard.get("undecodable", {}).values())
    assert audit["shifts"]["in"]["per_set"]["test"]["exact"] == 0  # the base test split never enters training
    assert "## Contamination: evaluation images inside a shift?" in (d / "reports/results/index.md").read_text()


def test_second_run_is_a_noop(project):
    _, repo, _ = project
    assert _names(repo.reproduce()) == ALWAYS  # the embedded profile's manifests are constant: nothing else


def test_editing_full_profile_code_reruns_nothing_in_the_embedded_profile(project):
    """The LAION reader and the pointer machinery are the full profile's (selectbench/full/): the
    embedded default lists only selectbench/${profile} = selectbench/embedded, so none of its
    stages reruns; an edit of the embedded world reruns exactly the stages that read it."""
    d, repo, _ = project
    # `code` reruns on any edit under selectbench/ or stages/; the fingerprints tell what else must.
    for f in ("selectbench/full/laion.py", "selectbench/full/pointer.py", "selectbench/full/vtab.py"):
        path = d / f
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        try:
            assert _names(repo.reproduce()) == {"code"} | ALWAYS, f
        finally:
            path.write_text(text)
    world = d / "selectbench/embedded/captions.py"
    text = world.read_text()
    world.write_text(text + "\n# an edit\n")
    try:
        ran = _names(repo.reproduce())
    finally:
        world.write_text(text)
    # The three profile stages rerun; the pool is byte-identical, so nothing downstream does.
    assert ran == {"code", "download", "pool", "tasks"} | ALWAYS
    assert _names(repo.reproduce()) <= {"code", "download", "pool", "tasks"} | ALWAYS  # reverted: the locked code


def test_a_code_edit_reruns_exactly_the_stages_that_import_it(project):
    """stats.py is imported by the report only, generator_train.py by train_generator, whose model
    comes back byte-identical: nothing below it reruns but the report, which reads the new timing
    record (reports/cost/) it writes."""
    d, repo, _ = project
    for f, below in (("selectbench/evaluation/stats.py", set()), ("selectbench/models/generator_train.py", {"report"})):
        path = d / f
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        try:
            ran = _names(repo.reproduce()) - {"code"} - ALWAYS
        finally:
            path.write_text(text)
            reverted = _names(repo.reproduce())
        importers = {p.stem for p in (d / "data/code").glob("*.txt") if f in p.read_text()}
        assert {name.split("@")[0] for name in ran} == importers | below, f
        assert reverted <= {"code"} | ran | ALWAYS, f  # back to the locked code: no other stage


def test_changing_one_shift_reruns_only_its_chain(project):
    d, repo, _ = project
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["shifts"]["in"]["per_class"] += 2
    write(p, d / "params.yaml")
    ran = _names(repo.reproduce())
    # check_params reruns on any params.yaml edit; its constant output stops it there. The audit
    # covers every shift in one pass, but only `in`'s flag file can change, so only shard@in follows.
    assert ran == {"check_params", "curate@in", "audit", "shard@in", "describe@in", "train@in-r1", "train@in-r2",
                   "evaluate@in-r1", "evaluate@in-r2", "report"} | ALWAYS


def test_clip_threshold_reruns_only_the_text_search_chain(project):
    d, repo, _ = project
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["curation"]["clip_threshold"] = 0.4
    write(p, d / "params.yaml")
    ran = _names(repo.reproduce())
    assert "curate@la_txt2img" in ran
    assert ran <= {"check_params", "curate@la_txt2img", "audit", "shard@la_txt2img", "describe@la_txt2img", "report"} | {
        f"{s}@la_txt2img-{r}" for s in ("train", "evaluate") for r in ("r1", "r2")} | ALWAYS


def test_push_then_pull_in_a_fresh_clone_restores_everything(project, tmp_path):
    d, _, _ = project
    remote = tmp_path / "remote"
    dvc, git = [DVC], GIT
    subprocess.run(dvc + ["remote", "add", "-f", "-d", "t", str(remote)], cwd=d, check=True)
    subprocess.run(dvc + ["push", "-q"], cwd=d, check=True)
    subprocess.run(git + ["add", "-A"], cwd=d, check=True)
    subprocess.run(git + ["commit", "-qm", "run"], cwd=d, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(d), str(clone)], check=True)
    subprocess.run(dvc + ["pull", "-q"], cwd=clone, check=True)
    for out in ("data/shards/in/sizes.json", "models/in/r1/model.safetensors", "reports/items/in/r2.npz", "data/curated/in/index.parquet",
                "reports/results/index.md"):
        assert (clone / out).read_bytes() == (d / out).read_bytes(), out
    st = subprocess.run(dvc + ["status", "--json"], cwd=clone, capture_output=True, text=True, check=True)
    assert json.loads(st.stdout) == UP_TO_DATE, st.stdout


def _revisions(node) -> set[str]:
    """Every revision name anywhere in `dvc plots diff --json` output (format varies by plot type)."""
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("revisions", "rev") and isinstance(v, (list, str)):
                out |= set([v] if isinstance(v, str) else v)
            else:
                out |= _revisions(v)
    elif isinstance(node, list):
        for v in node:
            out |= _revisions(v)
    return out


def test_plots_and_metrics_diff_against_the_last_commit(project):
    """After the push test committed a run: change a shift, rerun, compare with HEAD."""

    d, repo, _ = project
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["shifts"]["in"]["per_class"] -= 3
    write(p, d / "params.yaml")
    assert "train@in-r1" in _names(repo.reproduce())
    plots = json.loads(subprocess.run([DVC, "plots", "diff", "HEAD", "--json"], cwd=d, capture_output=True,
                                      text=True, check=True).stdout)
    plots = plots.get("data", plots)  # DVC 3: {"data": {plot id: [...]}, "errors": ...}
    top = yaml.safe_load((d / "dvc.yaml").read_text())["plots"]
    for fig in top:
        hits = [v for k, v in plots.items() if fig in k] if isinstance(plots, dict) else []
        assert hits, f"{fig} missing from dvc plots diff: {list(plots)[:10]}"
        assert {"HEAD", "workspace"} <= _revisions(hits), fig
    metrics = json.loads(subprocess.run([DVC, "metrics", "diff", "HEAD", "--json"], cwd=d, capture_output=True,
                                        text=True, check=True).stdout)
    changed = metrics.get("diff", metrics)
    assert "reports/metrics/in/data.json" in changed and "images" in changed["reports/metrics/in/data.json"]
    assert changed["reports/metrics/in/data.json"]["images"]["new"] == 10 * p["shifts"]["in"]["per_class"]
    assert "reports/metrics/la_txt2img/data.json" not in changed  # untouched shift: no diff
    assert "reports/metrics/la_txt2img/r1.json" not in changed


def test_an_empty_shift_and_empty_classes_are_reported_not_crashed(project):
    """A shift that curates 0 images and one whose classes are mostly empty run through every stage:
    training skips the empty one with its reason, the report lists it as untrained (never a zero or a
    dropped row), and the sparse one names its empty classes."""
    d, repo, _ = project
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["shifts"]["empty"] = {**p["shifts"]["in"], "subsample": 0.0}
    p["shifts"]["sparse"] = {**p["shifts"]["in"], "subsample": 0.05}  # a few images: most classes get none
    write(p, d / "params.yaml")
    ran = _names(repo.reproduce())
    assert {f"{s}@{k}" for s in ("curate", "shard", "describe") for k in ("empty", "sparse")} <= ran
    assert {f"{s}@{k}-{r}" for s in ("train", "evaluate") for k in ("empty", "sparse") for r in ("r1", "r2")} <= ran
    assert "report" in ran
    assert json.loads((d / "data/curated/empty/stats.json").read_text())["images"] == 0
    sparse = json.loads((d / "data/curated/sparse/stats.json").read_text())
    assert 0 < sparse["images"] and len(sparse["empty_classes"]) >= 5
    for r in ("r1", "r2"):
        assert yaml.safe_load((d / f"models/empty/{r}/args.yaml").read_text())["skipped"]
        assert json.loads((d / f"reports/metrics/empty/{r}.json").read_text())["status"].startswith("not trained")
        assert json.loads((d / f"reports/metrics/sparse/{r}.json").read_text())["status"] == "ok"
    index = (d / "reports/results/index.md").read_text()
    untrained = [ln for ln in index.splitlines() if ln.startswith("Missing or untrained:")]
    assert untrained and "empty (" in untrained[0] and "sparse" not in untrained[0]
    summary = json.loads((d / "reports/summary.json").read_text())
    assert "sparse" in summary and summary["sparse"]["top1"]["n"] == 2


def test_clip_score_shift_and_semdedup_option_curate(project):
    """DataComp's CLIP-score filter as a strategy and SemDeDup as an option on another shift, each
    through its curate stage: sorted, smaller than what they filter, counts recorded."""
    d, repo, _ = project
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["shifts"]["la_clip"] = {"strategy": "clip_score", "uses": "curation.seed", "fraction": 0.5, "threshold": None,
                              "per_class_cap": None}
    p["shifts"]["la_dedup"] = {"strategy": "substring", "uses": "curation.seed", "per_class_cap": None,
                               "semdedup": {"clusters": 20, "epsilon": 0.05, "seed": 0}}
    p["shifts"]["la_sub"] = {"strategy": "substring", "uses": "curation.seed", "per_class_cap": None}
    p["shifts"]["la_clean"] = {**p["shifts"]["la_sub"], "clean": {"folds": 5, "seed": 0}}
    write(p, d / "params.yaml")
    ran = set()
    for s in ("la_clip", "la_dedup", "la_sub", "la_clean"):
        ran |= _names(repo.reproduce(f"curate@{s}"))
    assert {"curate@la_clip", "curate@la_dedup", "curate@la_sub", "curate@la_clean"} <= ran
    cleaned = json.loads((d / "data/curated/la_clean/stats.json").read_text())
    raw = json.loads((d / "data/curated/la_sub/stats.json").read_text())
    assert cleaned["label_issues_removed"] > 0 and cleaned["cleaned_from"] == raw.get("matched_from", raw["images"])
    assert cleaned["label_precision"] > raw["label_precision"]  # the substring shift's caption noise, partly removed
    clip = json.loads((d / "data/curated/la_clip/stats.json").read_text())
    assert clip["clip_score_kept"] == round(0.5 * clip["candidates"]) and clip["strategy"] == "clip_score"
    dedup = json.loads((d / "data/curated/la_dedup/stats.json").read_text())
    assert dedup["matched_from"] <= dedup["semdedup_from"]
    p["shifts"]["la_clip"]["threshold"] = 0.3  # both set: a one-line error naming the shift
    write(p, d / "params.yaml")
    r = subprocess.run([sys.executable, "-m", "stages.curate", "la_clip"], cwd=d, capture_output=True, text=True)
    assert r.returncode != 0 and "shifts.la_clip" in r.stderr and "Traceback" not in r.stderr
