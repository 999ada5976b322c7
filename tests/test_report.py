"""selectbench.evaluation.report: tables, best-or-tied marks, noise floor and the three-valued
findings on hand-made replicates and test items (known answers)."""
import numpy as np
import pytest

from selectbench.evaluation import stats
from selectbench.evaluation.report import findings, runs, tables

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
FINE = {"t-shirt", "pullover", "coat", "shirt"}
DEC = findings.Decision(confidence=0.95, margin=0.01, draws=300, seed=0)
N = 2000


def _items(acc: float, rep: int, seed: int) -> np.ndarray:
    """Exactly round(acc * N) correct test items, a different set per replicate and shift."""
    v = np.zeros(N, dtype=bool)
    v[np.random.default_rng([seed, rep]).permutation(N)[:round(acc * N)]] = True
    return v


def _shift(name, accs, gini=0.1, noise_est=0.1, noise_exact=0.1, is_=1.0, cmmd=0.1, fine=0.4, other=0.1, seed=0):
    pc = [fine if c in FINE else other for c in CLASSES]
    data = {"images": 100, "coverage": 10, "dataset": {"images": 100, "gini": gini, "count_per_class": [10] * 10},
            "quality": {"inception_score": is_, "cmmd": cmmd, "clip_score": 0.2},
            "label_noise": {"estimated": noise_est, "exact": noise_exact, "per_class_exact": pc}}
    sh = runs.Shift(name, data)
    for i, a in enumerate(accs):
        r = f"r{i + 1}"
        sh.evals[r] = {"status": "ok", "top1": a, "per_class_accuracy": [a] * 10,
                       "corruption": {"mean_top1": a / 2, "error_table": [[1 - a / 2] * 5] * 15}}
        sh.items[r] = {"top1": _items(a, i, seed), "ssl": _items(a, i, seed + 1)}
    return sh


def _found(sh):
    return {f["claim"].split(" (")[0]: f for f in findings.findings(sh, DEC, CLASSES, FINE)}


def test_clear_gaps_hold():
    sh = {"in": _shift("in", [0.90, 0.91, 0.90], gini=0.0, is_=3.0, cmmd=0.1, noise_est=0.05, noise_exact=0.04, seed=1),
          "la_img2img": _shift("la_img2img", [0.80, 0.80, 0.81], gini=0.2, is_=2.5, cmmd=0.2, noise_est=.12,
                               noise_exact=.10, seed=2),
          "la_txt2img": _shift("la_txt2img", [0.60, 0.61, 0.60], gini=0.5, is_=2.0, cmmd=0.3, noise_est=.3,
                               noise_exact=.25, seed=3),
          "sd_img2img": _shift("sd_img2img", [0.70, 0.70, 0.71], gini=0.3, is_=1.5, cmmd=0.4, noise_est=.2,
                               noise_exact=.18, seed=4),
          "sd_txt2img": _shift("sd_txt2img", [0.50, 0.50, 0.51], gini=0.6, is_=1.0, cmmd=0.5, noise_est=.35,
                               noise_exact=.4, seed=5)}
    f = _found(sh)
    assert f["Expert curation"]["verdict"] == stats.HOLDS
    assert f["Embedding/text search from a web pool beats synthetic generation"]["verdict"] == stats.HOLDS
    assert f["img2img beats txt2img"]["verdict"] == stats.HOLDS
    assert f["Sanity check"]["verdict"] == stats.HOLDS
    # dataset-side values, no seeds: a perfect rank order resamples to Spearman 1 every time
    v = f["Validation: the truth-free noise estimate ranks shifts like the exact noise"]
    assert v["verdict"] == stats.HOLDS and v["evidence"].startswith("Spearman = 1.000 [1.000, 1.000]")
    e = f["img2img beats txt2img"]
    assert e["evidence"].startswith("la_img2img - la_txt2img: +0.200 [") and e["replicates"] == 3
    assert e["interval"][0] > 0 and e["rule"].startswith("paired difference")
    # effect and interval of a claim in parts are those of its deciding (lowest) part
    assert e["effect"] == pytest.approx(0.2, abs=0.005) and e["interval"][0] < 0.2
    # rebalancing needs la_txt2img_balanced: missing, so it cannot be decided
    assert f["Rebalancing a skewed shift"]["verdict"] == stats.OPEN


def test_rank_claims_over_enough_shifts():
    accs = np.linspace(0.45, 0.9, 10)
    sh = {f"s{i}": _shift(f"s{i}", [a, a + 0.005, a - 0.005], gini=1 - a, is_=a * 3, cmmd=1 - a, noise_est=1 - a,
                          noise_exact=1 - a, seed=i) for i, a in enumerate(accs)}
    f = {x["claim"]: x for x in findings.findings(sh, DEC, CLASSES, FINE)}
    assert f["Class imbalance explains most of the loss (Spearman(gini, top-1) below -0.5)"]["verdict"] == stats.HOLDS
    # quality tracks utility perfectly here, so "quality does not predict utility" must NOT hold
    for q in ("inception_score", "cmmd"):
        assert f[f"Image quality ({q}) does not predict utility (Spearman with top-1 below 0.5)"]["verdict"] == stats.FAILS
    v = f["Validation: the truth-free noise estimate ranks shifts like the exact noise (Spearman above 0.7)"]
    assert v["verdict"] == stats.HOLDS and v["interval"][0] > 0.7
    # the shifts are not named in/la_/sd_: those claims cannot be checked, and say so
    assert f["Expert curation (in) stays best on base accuracy"]["verdict"] == stats.OPEN


def test_no_difference_does_not_hold_and_a_reversal_never_holds():
    same = [0.70, 0.70, 0.70]
    sh = {"in": _shift("in", [0.5, 0.5, 0.5], seed=1), "la_img2img": _shift("la_img2img", same, seed=2),
          "la_txt2img": _shift("la_txt2img", same, seed=2), "sd_img2img": _shift("sd_img2img", same, seed=3),
          "sd_txt2img": _shift("sd_txt2img", same, seed=3)}
    f = _found(sh)
    assert f["Expert curation"]["verdict"] == stats.FAILS          # in is 20 points below
    assert f["img2img beats txt2img"]["verdict"] == stats.FAILS    # identical items: [0, 0] < margin
    assert f["img2img beats txt2img"]["interval"] == [0.0, 0.0]


def test_noise_between_replicates_makes_a_small_gap_inconclusive():
    sh = {"la_txt2img": _shift("la_txt2img", [0.60, 0.66, 0.57], seed=1),
          "la_txt2img_balanced": _shift("la_txt2img_balanced", [0.63, 0.62, 0.64], seed=2)}
    f = _found(sh)["Rebalancing a skewed shift"]
    assert f["verdict"] == stats.OPEN and f["decide"]
    assert f["interval"][0] < 0 < f["interval"][1]


def test_one_replicate_is_never_decided():
    sh = {"la_txt2img": _shift("la_txt2img", [0.5], seed=1),
          "la_txt2img_balanced": _shift("la_txt2img_balanced", [0.9], seed=2)}
    f = _found(sh)["Rebalancing a skewed shift"]
    assert f["verdict"] == stats.OPEN and "2 replicates" in f["decide"] and f["interval"] is None


def test_best_is_marked_only_when_paired_test_separates_it():
    sh = {"a": _shift("a", [0.80, 0.81, 0.80], seed=1), "b": _shift("b", [0.70, 0.70, 0.71], seed=2),
          "c": _shift("c", [0.795, 0.80, 0.805], seed=3)}
    ivs = tables.intervals(sh, 0.95)
    marks = tables.best_marks(sh, ivs, 0.95)
    assert marks["top1"] == {"best": None, "tied": ["a", "c"]}       # a and c overlap: tied, nobody bold
    del sh["c"]
    ivs = tables.intervals(sh, 0.95)
    assert tables.best_marks(sh, ivs, 0.95)["top1"] == {"best": "a", "tied": []}
    md = tables.markdown(tables.utility_table(sh, ivs), ["top1"], {s: {"top1": tables.cell(ivs[s]["top1"])} for s in sh},
                         tables.best_marks(sh, ivs, 0.95))
    assert "| a | **0.803 ± " in md and "| b | 0.703 ± " in md


def test_noise_floor_and_summary_numbers():
    sh = {"in": _shift("in", [0.80, 0.82, 0.81], seed=1), "weak": _shift("weak", [0.40, 0.41, 0.42], seed=2)}
    ivs = tables.intervals(sh, 0.95)
    fl = tables.noise_floor(sh, ivs, 0.95)
    assert fl.loc["top1", "weakest"] == "weak"
    assert fl.loc["top1", "in_sd_between_replicates"] == pytest.approx(0.01)
    assert fl.loc["top1", "range_in_to_weakest"] == pytest.approx(0.40)
    assert fl.loc["top1", "range_over_half_width"] > 5
    util = tables.utility_table(sh, ivs)
    assert util.loc["in", "top1"] == pytest.approx(0.81) and util.loc["in", "replicates"] == 3
    assert util.loc["in", "top1_lo"] < 0.81 < util.loc["in", "top1_hi"]


def test_mce_and_rank_agreement_pair_replicates_with_in():
    base, other = _shift("in", [0.9, 0.9]), _shift("other", [0.8, 0.8])
    for r in ("r1", "r2"):
        base.evals[r]["corruption"]["error_table"] = [[0.0] * 5] + [[0.2] * 5] * 14  # `in` perfect on corruption 0
        other.evals[r]["corruption"]["error_table"] = [[0.5] * 5] + [[0.4] * 5] * 14
    ivs = tables.intervals({"in": base, "other": other}, 0.95)
    assert ivs["other"]["mCE_vs_in"].mean == pytest.approx(2.0) and ivs["in"]["mCE_vs_in"].mean == pytest.approx(1.0)
    for r in ("r1", "r2"):
        base.evals[r]["corruption"]["error_table"] = [[0.0] * 5] * 15
    assert "mCE_vs_in" not in tables.intervals({"in": base, "other": other}, 0.95)["other"]


def test_flat_table_has_a_row_per_replicate_and_keeps_missing_ones():
    sh = _shift("in", [0.9, 0.8])
    sh.evals["r3"] = None
    sh.costs = {"curate": {"wall_s": 1.5}, "train_r1": {"wall_s": 3.0}, "train_r2": {"wall_s": 4.0}}
    t = tables.flat_table({"in": sh})
    assert t.loc[("in", "r1"), "top1"] == 0.9 and t.loc[("in", "r2"), "top1"] == 0.8
    assert t.loc[("in", "r1"), "cost.train_r1.wall_s"] == 3.0 and np.isnan(t.loc[("in", "r1"), "cost.train_r2.wall_s"])
    assert t.loc[("in", "r2"), "cost.curate.wall_s"] == 1.5
    assert t.loc[("in", "r3"), "status"] == "missing" and t.loc[("in", "r1"), "data.quality.cmmd"] == 0.1


def test_a_claim_in_parts_reports_the_part_that_decides_it():
    sh = {"in": _shift("in", [0.80, 0.80, 0.80], seed=1),
          "la_img2img": _shift("la_img2img", [0.77, 0.775, 0.77], seed=2),       # close but clearly below
          "sd_img2img": _shift("sd_img2img", [0.60, 0.78, 0.70], seed=3)}        # far below on average, noisy
    f = _found(sh)["Expert curation"]
    assert f["verdict"] == stats.OPEN
    assert f["effect"] == pytest.approx(0.8 - 2.08 / 3, abs=1e-3) and f["interval"][0] < 0  # sd_img2img's part, not the closest mean


# ------------------------------------------------------------------------------ controls
def _control(name, p_true, seed, top1=None):
    """A shuffled-label shift whose replicates give the true class a mean probability of p_true[i]
    (item values spread +-0.05 around it) and score top-1 `top1` (default: p_true)."""
    sh = _shift(name, top1 or p_true, seed=seed)
    sh.data["dataset"]["labels_shuffled"] = True
    for i, p in enumerate(p_true):
        spread = np.random.default_rng([seed, i, 7]).uniform(-0.05, 0.05, N)
        sh.items[f"r{i + 1}"]["p_true"] = p + spread - spread.mean()
    return sh


def _checks(sh):
    return {c["control"]: c for c in findings.controls(sh, DEC, len(CLASSES))}


def test_controls_pass_and_the_negative_control_is_never_a_rival():
    sh = {"in": _shift("in", [0.80, 0.81, 0.80], seed=1),
          "in_q25": _shift("in_q25", [0.70, 0.71, 0.70], seed=2),
          "in_shuffled": _control("in_shuffled", [0.100, 0.100, 0.100], seed=3),
          "la_img2img": _shift("la_img2img", [0.60, 0.60, 0.61], seed=4)}
    c = _checks(sh)
    assert c["positive"]["verdict"] == stats.HOLDS and c["positive"]["claim"].startswith("Positive control: in beats")
    assert c["negative"]["verdict"] == stats.HOLDS and c["negative"]["effect"] == pytest.approx(0.1)
    # the control is the weakest shift by far, but it is not a rival: not in findings, floor or marks
    f = _found(sh)
    assert "in_shuffled" not in f["Expert curation"]["evidence"]
    ivs = tables.intervals(sh, 0.95)
    assert tables.noise_floor(sh, ivs, 0.95).loc["top1", "weakest"] == "la_img2img"
    assert tables.best_marks(sh, ivs, 0.95)["top1"]["best"] == "in"


def test_controls_that_fail_say_so():
    sh = {"in": _shift("in", [0.70, 0.71, 0.70], seed=1),
          "in_q25": _shift("in_q25", [0.74, 0.75, 0.74], seed=2),       # less data scores higher
          "in_shuffled": _control("in_shuffled", [0.30, 0.31, 0.30], seed=3)}  # learns without labels
    c = _checks(sh)
    assert c["positive"]["verdict"] == stats.FAILS
    assert c["negative"]["verdict"] == stats.FAILS
    from selectbench.evaluation.report.build import _controls_md
    text = "\n".join(_controls_md(list(c.values()), DEC))
    assert "cannot rank curation strategies" in text and "without label information" in text


def test_no_controls_is_stated():
    from selectbench.evaluation.report.build import _controls_md
    assert findings.controls({"in": _shift("in", [0.7, 0.7, 0.71])}, DEC, 10) == []
    assert "nothing shows that the harness can see data" in _controls_md([], DEC)[0]


def _transfer(name, accs, seed):
    sh = runs.Shift(name, None)
    for i, a in enumerate(accs):
        sh.evals[f"r{i + 1}"] = {"status": "ok"}
        sh.items[f"r{i + 1}"] = {"transfer": _items(a, i, seed), "transfer_strata": np.repeat(np.arange(4), N // 4)}
    return sh


def test_transfer_validity_is_a_paired_control_against_random_init():
    sh = {"in": _shift("in", [0.8, 0.8, 0.8], seed=1)}
    for r, it in _transfer("in", [0.70, 0.71, 0.70], 5).items.items():
        sh["in"].items[r].update(it)
    better = {c["control"]: c for c in findings.controls(sh, DEC, 10, _transfer("random init", [0.60, 0.61, 0.60], 6))}
    assert better["transfer"]["verdict"] == stats.HOLDS
    assert better["transfer"]["effect"] == pytest.approx(0.10, abs=0.005)
    worse = {c["control"]: c for c in findings.controls(sh, DEC, 10, _transfer("random init", [0.75, 0.76, 0.75], 6))}
    assert worse["transfer"]["verdict"] == stats.FAILS and worse["transfer"]["claim"].startswith("Transfer validity")
    assert [c["control"] for c in findings.controls(sh, DEC, 10, None)] == []  # no baseline: no claim


def test_negative_control_with_one_replicate_is_inconclusive():
    sh = {"in_shuffled": _control("in_shuffled", [0.1], seed=3)}
    assert _checks(sh)["negative"]["verdict"] == stats.OPEN


def test_negative_control_is_decided_by_the_true_class_probability_not_top1():
    # Near-uniform outputs whose argmax lands on whole classes: top-1 far off chance, p(true) at it.
    sh = {"in_shuffled": _control("in_shuffled", [0.101, 0.099, 0.100], seed=3, top1=[0.18, 0.09, 0.12])}
    c = _checks(sh)["negative"]
    assert c["verdict"] == stats.HOLDS and c["effect"] == pytest.approx(0.1, abs=1e-9)
    assert c["evidence"].startswith("p(true class) 0.100 [") and "top-1 0.130" in c["evidence"]
    assert "true-class probability" in c["claim"] and "not decisive" in c["rule"]
    # A model that learned from the labels gives the true class more than chance, whatever its top-1.
    leak = {"in_shuffled": _control("in_shuffled", [0.16, 0.17, 0.16], seed=3, top1=[0.10, 0.10, 0.10])}
    assert _checks(leak)["negative"]["verdict"] == stats.FAILS


def test_negative_control_without_true_class_probabilities_is_open_and_says_why():
    sh = {"in_shuffled": _control("in_shuffled", [0.1, 0.1, 0.1], seed=3)}
    for it in sh["in_shuffled"].items.values():
        del it["p_true"]
    c = _checks(sh)["negative"]
    assert c["verdict"] == stats.OPEN and "no true-class probabilities" in c["evidence"]


def test_near_copy_rule():
    from selectbench.evaluation.report.build import _copies_md, near_copies

    assert near_copies({"rms_own": 40.0, "rms_same_class": 72.0}, 0.1) is True
    assert near_copies({"rms_own": 70.0, "rms_same_class": 72.0}, 0.1) is False
    assert near_copies({"rms_own": 64.0, "rms_same_class": 72.0}, 0.1) is True      # 64 < 64.8
    assert near_copies({"rms_own": float("nan"), "rms_same_class": 72.0}, 0.1) is None
    sh = _shift("sd_img2img", [0.5, 0.5, 0.51])
    sh.data["dataset"]["near_copy"] = {"rms_own": 40.0, "rms_same_class": 72.0, "items": 10}
    text = "\n".join(_copies_md({"sd_img2img": sh}, 0.1))
    assert "| sd_img2img | 40.0 | 72.0 | **yes** |" in text


# ------------------------------------------------------------------------------ cost
def test_pareto_known_answer():
    cost = np.array([1.0, 2.0, 3.0, 3.0, np.nan, 0.5])
    util = np.array([0.5, 0.7, 0.6, 0.9, 0.99, 0.4])
    # 3 (cost 3, 0.9) dominates 2 (cost 3, 0.6); 1 beats 0 on utility only: both stay; NaN never
    assert tables.pareto(cost, util).tolist() == [True, True, False, True, False, True]
    assert tables.pareto(np.array([1.0, 1.0]), np.array([0.5, 0.5])).tolist() == [True, True]  # ties: neither dominates
    assert tables.pareto(np.array([]), np.array([])).tolist() == []


def test_cost_table_shares_upstream_stages_among_their_users():
    def sh(name, strategy, curate, trains, rebalanced=False, control=False, cleaned=False):
        x = _shift(name, [0.5, 0.5, 0.51])
        x.data["dataset"]["strategy"] = strategy
        if rebalanced:
            x.data["dataset"]["rebalanced_from"] = 100
        if cleaned:
            x.data["dataset"]["cleaned_from"] = 100
        if control:
            x.data["dataset"]["labels_shuffled"] = True
        x.costs = {"curate": {"wall_s": curate}, **{f"train_r{i}": {"wall_s": t} for i, t in enumerate(trains)}}
        return x

    runs_ = {"in": sh("in", "balanced", 1.0, [4.0, 6.0]),
             "la_txt2img": sh("la_txt2img", "txt2img", 2.0, [5.0]),
             "la_txt2img_balanced": sh("la_txt2img_balanced", "txt2img", 3.0, [5.0], rebalanced=True),
             "sd_txt2img": sh("sd_txt2img", "sd_txt2img", 30.0, [5.0]),
             "in_shuffled": sh("in_shuffled", "balanced", 1.0, [5.0], control=True)}
    shared = {"train_embedder": {"wall_s": 90.0}, "embed": {"wall_s": 20.0}, "train_generator": {"wall_s": 100.0}}
    ivs = tables.intervals(runs_, 0.95)
    c = tables.cost_table(runs_, ivs, shared)
    assert c.loc["in", "compute_s"] == pytest.approx(1.0 + 5.0)
    # embedder: 3 users (two la shifts, sd); embed: 2 users; generator: 1
    assert c.loc["la_txt2img", "upstream_share_s"] == pytest.approx(90 / 3 + 20 / 2)
    assert c.loc["sd_txt2img", "compute_s"] == pytest.approx(30 + 5 + 90 / 3 + 100)
    assert c.loc["in", "bin"] == "high" and c.loc["la_txt2img", "bin"] == "low"
    assert c.loc["in", "labour_per_image"] == "expert label"
    assert (c.loc["in", "judgements_lo"], c.loc["in", "judgements_hi"]) == (10, 30)
    # a `clean` option reads the embedder's embeddings too: it takes its share
    runs_["in_clean"] = sh("in_clean", "balanced", 1.0, [5.0], cleaned=True)
    c = tables.cost_table(runs_, tables.intervals(runs_, 0.95), shared)
    assert c.loc["in_clean", "upstream"] == "embed+train_embedder" and c.loc["in", "upstream"] == "none"
    assert c.loc["la_txt2img", "upstream_share_s"] == pytest.approx(90 / 4 + 20 / 3)
    assert (c.loc["sd_txt2img", "judgements_lo"], c.loc["sd_txt2img", "judgements_hi"]) == (0, 0)
    assert not c.loc["in_shuffled", "pareto"]
    # a missing upstream record makes the compute unknown, never a silent undercount
    partial = tables.cost_table(runs_, ivs, {"train_embedder": {"wall_s": 90.0}})
    assert np.isnan(partial.loc["la_txt2img", "compute_s"]) and partial.loc["in", "compute_s"] == pytest.approx(6.0)


def test_every_strategy_has_a_cost_entry():
    from selectbench.curation import upstream
    from selectbench.curation.registry import STRATEGIES

    assert set(STRATEGIES) == set(upstream.UPSTREAM)
    with pytest.raises(KeyError, match="no cost entry"):
        upstream.upstream("nonesuch", False)


def test_quality_vs_utility_known_ranks_and_exclusions():
    sh = {"a": _shift("a", [0.90, 0.91, 0.90], is_=3.0, cmmd=0.1, seed=1),
          "b": _shift("b", [0.70, 0.71, 0.70], is_=2.0, cmmd=0.2, seed=2),
          "c": _shift("c", [0.50, 0.51, 0.50], is_=1.0, cmmd=0.3, seed=3),
          "c_q25": _shift("c_q25", [0.10, 0.10, 0.11], is_=9.0, cmmd=0.9, seed=4),     # a fraction: left out
          "in_shuffled": _control("in_shuffled", [0.1, 0.1, 0.1], seed=5)}            # a control: left out
    qu = {(r["quality"], r["utility"]): r for r in findings.quality_vs_utility(sh, DEC, ["top1", "ssl"])}
    for q in ("inception_score", "cmmd"):  # better quality (higher IS, lower CMMD) goes with higher top-1
        r = qu[(q, "top1")]
        assert r["shifts"] == 3 and r["spearman"] == pytest.approx(1.0)
        assert r["interval"][1] == pytest.approx(1.0)  # resamples of 3 perfectly ordered shifts stay at 1
    sh["b"].data["quality"]["inception_score"] = float("nan")                        # 2 shifts left: no value
    r = {(x["quality"], x["utility"]): x for x in findings.quality_vs_utility(sh, DEC, ["top1"])}
    assert r[("inception_score", "top1")]["spearman"] is None and r[("inception_score", "top1")]["shifts"] == 2
    assert r[("cmmd", "top1")]["spearman"] == pytest.approx(1.0)


def _fraction(name, accs, images, seed):
    sh = _shift(name, accs, seed=seed)
    sh.data["images"] = images
    sh.data["dataset"]["subsample"] = images / 1000
    return sh


def test_quantity_curves_gain_per_image_and_knee():
    # 100 -> 250 -> 500 gains clearly, 500 -> 1000 does not: the knee is at 500 images.
    sh = {"in": _shift("in", [0.800, 0.801, 0.800], seed=1),
          "in_q10": _fraction("in_q10", [0.600, 0.601, 0.600], 100, seed=2),
          "in_q25": _fraction("in_q25", [0.700, 0.701, 0.700], 250, seed=3),
          "in_q50": _fraction("in_q50", [0.800, 0.800, 0.801], 500, seed=4),
          "other": _shift("other", [0.5, 0.5, 0.5], seed=5)}
    sh["in"].data["images"] = 1000
    c = tables.quantity_curves(sh, tables.intervals(sh, 0.95), 0.95)
    assert c["shift"].tolist() == ["in_q10", "in_q25", "in_q50", "in"] and (c["parent"] == "in").all()
    assert np.isnan(c.loc[0, "gain"]) and c.loc[1, "gain"] == pytest.approx(0.1, abs=1e-3)
    assert c.loc[1, "gain_per_1k"] == pytest.approx(0.1 / 0.15, abs=0.01) and c.loc[1, "gain_lo"] > 0
    assert c["knee"].tolist() == [False, False, True, False]
    # every step still gains: the knee is the largest point
    sh["in"] = _shift("in", [0.900, 0.901, 0.900], seed=1)
    sh["in"].data["images"] = 1000
    assert tables.quantity_curves(sh, tables.intervals(sh, 0.95), 0.95)["knee"].tolist() == [False, False, False, True]
    # one replicate: no interval, so no knee is claimed
    one = {s: _fraction(s, [a], n, seed=i) for i, (s, a, n) in enumerate([("in_q25", 0.7, 250), ("in_q50", 0.8, 500)])}
    one["in"] = _shift("in", [0.9], seed=9)
    one["in"].data["images"] = 1000
    assert not tables.quantity_curves(one, tables.intervals(one, 0.95), 0.95)["knee"].any()
    assert tables.quantity_curves({"in": sh["in"]}, tables.intervals({"in": sh["in"]}, 0.95), 0.95).empty
