"""selectbench.report: tables and the findings check on hand-made metrics (known answers)."""
import numpy as np

from selectbench.evaluation.report import findings, tables

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
FINE = {"t-shirt", "pullover", "coat", "shirt"}


def _m(top1, gini, noise_est, noise_exact, is_=1.0, cmmd=0.1, fine_noise=0.4, other_noise=0.1):
    pc = [fine_noise if c in FINE else other_noise for c in CLASSES]
    return {"status": "ok", "top1": top1, "images": 100, "coverage": 10,
            "corruption": {"mean_top1": top1 / 2, "error_table": [[1 - top1 / 2] * 5] * 15},
            "per_class_accuracy": [top1] * 10, "natural": {"top1": top1}, "transfer": {"mean": 0.8, "ci95": [0.7, 0.9]},
            "ssl_knn": {"10shot_k20": top1}, "quality": {"inception_score": is_, "cmmd": cmmd, "clip_score": 0.2},
            "label_noise": {"estimated": noise_est, "exact": noise_exact, "per_class_exact": pc},
            "dataset": {"images": 100, "coverage": 10, "gini": gini, "min": 1, "median": 10, "max": 20}}


def _findings(mets):
    costs = {s: {} for s in mets}
    return {f["claim"]: f for f in findings.findings(tables.utility_table(mets, costs), tables.dataset_table(mets, costs), mets, CLASSES, FINE)}


def test_findings_follow_the_numbers():
    mets = {"in": _m(0.9, 0.0, 0.05, 0.04, is_=3.0, cmmd=0.1),
            "la_img2img": _m(0.8, 0.2, 0.12, 0.10, is_=2.5, cmmd=0.2),
            "la_txt2img": _m(0.6, 0.5, 0.30, 0.25, is_=2.0, cmmd=0.3),
            "sd_img2img": _m(0.7, 0.1, 0.20, 0.18, is_=1.5, cmmd=0.4),
            "sd_txt2img": _m(0.5, 0.6, 0.35, 0.40, is_=1.0, cmmd=0.5)}
    f = _findings(mets)
    assert f["Expert curation (in) stays best on base accuracy"]["holds"] is True
    assert f["Embedding/text search from a web pool beats synthetic generation"]["holds"] is True
    assert f["img2img beats txt2img"]["holds"] is True
    assert f["Class imbalance explains most of the loss (more skew, lower accuracy)"]["holds"] is True
    # quality tracks utility perfectly here, so "quality does not predict utility" must NOT hold
    assert f["Image quality (inception_score) does not predict utility"]["holds"] is False
    assert f["Image quality (cmmd) does not predict utility"]["holds"] is False
    assert f["Label noise concentrates in fine-grained classes"]["holds"] is True
    v = f["Validation: the truth-free noise estimate ranks shifts like the exact noise"]
    assert v["holds"] is True and v["evidence"].startswith("Spearman(estimated, exact) = 1.000, mean |estimated - exact| = 0.030")


def test_findings_flip_and_missing_shifts_are_not_dropped():
    mets = {"in": _m(0.5, 0.0, 0.40, 0.05), "la_img2img": _m(0.8, 0.0, 0.30, 0.10),
            "la_txt2img": _m(0.9, 0.0, 0.20, 0.20), "sd_txt2img": None}
    f = _findings(mets)
    assert f["Expert curation (in) stays best on base accuracy"]["holds"] is False
    assert f["img2img beats txt2img"]["holds"] is False
    assert f["Embedding/text search from a web pool beats synthetic generation"]["holds"] is None
    assert f["Validation: the truth-free noise estimate ranks shifts like the exact noise"]["holds"] is False
    util = tables.utility_table(mets, {s: {} for s in mets})
    assert util.loc["sd_txt2img", "status"] == "missing" and np.isnan(util.loc["sd_txt2img", "top1"])


def test_flat_table_has_every_scalar_metric_and_keeps_missing_shifts():
    m = _m(0.9, 0.1, 0.05, 0.04)
    m["top5"] = 0.99
    mets = {"in": m, "gone": None}
    costs = {"in": {"curate": {"wall_s": 1.5, "cpu_s": 1.2}, "evaluate": {"wall_s": 20.0}}, "gone": {}}
    t = tables.flat_table(mets, costs, tables.utility_table(mets, costs))
    assert t.loc["in", "top5"] == 0.99 and t.loc["in", "quality.cmmd"] == 0.1
    assert t.loc["in", "label_noise.per_class_exact.0"] == 0.4  # t-shirt is fine-grained
    assert t.loc["in", "cost.curate.cpu_s"] == 1.2 and t.loc["in", "cost.evaluate.wall_s"] == 20.0
    assert t.loc["in", "mCE_vs_in"] == 1.0 and t.loc["in", "status"] == "ok"
    assert not any(c.startswith("corruption.error_table") for c in t.columns)  # matrices stay in the JSON
    assert t.loc["gone", "status"] == "missing" and np.isnan(t.loc["gone", "top5"])


def test_mce_skips_corruptions_the_baseline_never_errs_on():
    base, other = _m(0.9, 0.0, 0.05, 0.04), _m(0.8, 0.0, 0.05, 0.04)
    base["corruption"]["error_table"] = [[0.0] * 5] + [[0.2] * 5] * 14  # `in` perfect on corruption 0
    other["corruption"]["error_table"] = [[0.5] * 5] + [[0.4] * 5] * 14
    util = tables.utility_table({"in": base, "other": other}, {"in": {}, "other": {}})
    assert util.loc["other", "mCE_vs_in"] == 2.0 and util.loc["in", "mCE_vs_in"] == 1.0
    assert (util["mCE_corruptions"] == 14).all()
    base["corruption"]["error_table"] = [[0.0] * 5] * 15
    assert np.isnan(tables.utility_table({"in": base, "other": other}, {"in": {}, "other": {}}).loc["other", "mCE_vs_in"])
