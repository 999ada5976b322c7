"""selectbench.evaluation.stats: intervals, paired comparisons and verdicts with known answers."""
import math

import numpy as np
import pytest

from selectbench.core.runtime import replicate_seed
from selectbench.evaluation import stats


def test_replicate_interval_is_the_t_interval():
    iv = stats.interval(np.array([[1.0], [2.0], [3.0]]), items=False)
    # mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.302653
    assert iv.mean == 2 and iv.sd == pytest.approx(1.0) and iv.df == pytest.approx(2.0)
    assert iv.lo == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert iv.hi == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    assert iv.complete and iv.half() == pytest.approx(2.484138, abs=1e-5)


def test_replicates_and_items_combine_by_welch_satterthwaite():
    s = np.array([[1, 0, 1, 0], [1, 1, 1, 0]], dtype=float)
    iv = stats.interval(s)
    # replicate part: var(0.5, 0.75)/2 = 0.015625; item part: var(1, .5, 1, 0)/4 = 0.0572917
    assert iv.mean == pytest.approx(0.625)
    assert iv.se == pytest.approx(math.sqrt(0.015625 + 0.0572917), rel=1e-5)
    assert iv.df == pytest.approx(0.0729167 ** 2 / (0.015625 ** 2 / 1 + 0.0572917 ** 2 / 3), rel=1e-4)
    assert iv.item_half == pytest.approx(3.182446 * math.sqrt(0.0572917), rel=1e-5)  # t(0.975, 4 - 1 strata)
    assert math.isnan(stats.interval(np.array([[1.0], [2.0]]), items=False).item_half)


def test_strata_weigh_equally():
    s = np.array([[1, 1, 0, 0, 0, 0]], dtype=float)
    assert stats.stratified_means(s)[0] == pytest.approx(1 / 3)
    assert stats.stratified_means(s, np.array([0, 0, 1, 1, 1, 1]))[0] == pytest.approx(0.5)
    # the sampling variance of a stratified mean: each stratum's variance / n_s, over S^2
    s = np.array([[1, 0, 1, 1]], dtype=float)
    iv = stats.interval(np.vstack([s, s]), np.array([0, 0, 1, 1]))
    assert iv.se == pytest.approx(math.sqrt(0.5 / 2 / 4))


def test_one_replicate_is_a_stated_fallback_never_a_verdict():
    iv = stats.interval(np.array([[1.0, 0.0, 1.0, 1.0]]))
    assert not iv.complete and "1 replicate" in iv.note
    assert iv.se == pytest.approx(0.25) and iv.df == 3  # the test items alone: var 0.25 / 4 items
    assert iv.hi - iv.mean == pytest.approx(3.182446 * 0.25, abs=1e-5)
    assert iv.item_half == pytest.approx(iv.hi - iv.mean, abs=1e-9)
    assert stats.verdict(iv, 0.01) == (stats.OPEN, "at least 2 replicates (the seed variance is unknown with 1)")
    bare = stats.interval(np.array([[0.7]]), items=False)
    assert not bare.complete and math.isnan(bare.lo) and bare.record()["lo"] is None
    assert stats.verdict(bare, 0.01)[0] == stats.OPEN


def test_zero_variance_gives_a_point_interval_and_a_verdict():
    iv = stats.interval(np.ones((3, 5)))
    assert (iv.lo, iv.mean, iv.hi) == (1.0, 1.0, 1.0) and iv.complete and iv.note == "zero variance"
    assert stats.verdict(iv, 0.01)[0] == stats.HOLDS
    same = stats.paired(np.ones((3, 5)), np.ones((3, 5)))
    assert (same.lo, same.hi) == (0.0, 0.0) and stats.verdict(same, 0.01)[0] == stats.FAILS


def test_paired_needs_one_shape_and_finite_scores():
    with pytest.raises(ValueError, match="one shape"):
        stats.paired(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        stats.interval(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="at least one item"):
        stats.interval(np.ones((2, 0)))


def test_pairing_removes_what_two_shifts_share():
    rng = np.random.default_rng(0)
    hard = rng.random(400) < 0.5                    # items both shifts get right or wrong together
    a = np.stack([hard | (rng.random(400) < 0.2) for _ in range(3)]).astype(float)
    b = np.stack([hard | (rng.random(400) < 0.1) for _ in range(3)]).astype(float)
    d = stats.paired(a, b)
    ia, ib = stats.interval(a), stats.interval(b)
    assert d.mean == pytest.approx(ia.mean - ib.mean)
    assert d.se < math.sqrt(ia.se ** 2 + ib.se ** 2)  # correlated items: the paired interval is narrower


def _iv(lo, hi, n=3):
    return stats.Interval((lo + hi) / 2, lo, hi, n, 0.01, (hi - lo) / 4, 10.0, True)


def test_verdict_rule():
    assert stats.verdict(_iv(0.001, 0.05), 0.01)[0] == stats.HOLDS
    assert stats.verdict(_iv(-0.03, 0.009), 0.01)[0] == stats.FAILS   # any effect is below the margin
    assert stats.verdict(_iv(-0.05, -0.01), 0.01)[0] == stats.FAILS   # reversed
    v, decide = stats.verdict(_iv(-0.01, 0.04), 0.01)
    assert v == stats.OPEN and decide
    # threshold claims: "value < -0.5" on a Spearman interval
    assert stats.verdict(_iv(-0.9, -0.6), 0.0, -0.5, greater=False)[0] == stats.HOLDS
    assert stats.verdict(_iv(-0.4, 0.2), 0.0, -0.5, greater=False)[0] == stats.FAILS
    assert stats.verdict(_iv(-0.8, -0.2), 0.0, -0.5, greater=False)[0] == stats.OPEN


def test_equivalence_rule():
    """A negative control at chance 0.1 within 0.01: inside the band holds, wholly outside fails."""
    assert stats.equivalent(_iv(0.095, 0.105), 0.1, 0.01)[0] == stats.HOLDS
    assert stats.equivalent(_iv(0.115, 0.13), 0.1, 0.01)[0] == stats.FAILS   # learned something: a leak
    assert stats.equivalent(_iv(0.05, 0.085), 0.1, 0.01)[0] == stats.FAILS   # systematically below chance
    v, decide = stats.equivalent(_iv(0.095, 0.12), 0.1, 0.01)
    assert v == stats.OPEN and decide
    assert stats.equivalent(_iv(0.1, 0.1), 0.1, 0.0)[0] == stats.OPEN        # zero band: never inside
    one = stats.interval(np.array([[1.0, 0.0]]))
    assert stats.equivalent(one, 0.5, 0.1)[0] == stats.OPEN                 # n = 1: no verdict


def test_combine():
    H, F, O = stats.HOLDS, stats.FAILS, stats.OPEN
    assert stats.combine([H, H]) == H
    assert stats.combine([H, O]) == O
    assert stats.combine([O, F, H]) == F
    assert stats.combine([]) == O


def test_bootstrap_rank():
    x = np.arange(8.0)
    y = np.stack([x * 0.1, x * 0.1 + 0.001], 1)     # [8 shifts, 2 replicates], perfectly monotone
    iv = stats.bootstrap_rank(x, y, 300, 0)
    # resampled duplicates tie in x but not always in y (their replicates differ), so lo is just below 1
    assert iv.mean == pytest.approx(1.0) and 0.9 < iv.lo <= iv.hi == pytest.approx(1.0) and iv.complete
    assert stats.bootstrap_rank(x, y, 300, 0) == iv  # seeded
    assert not stats.bootstrap_rank(x, y[:, :1], 300, 0).complete  # one replicate: seeds not covered
    assert stats.bootstrap_rank(x, y[:, :1], 300, 0, replicated=False).complete
    with pytest.raises(ValueError, match="3 shifts"):
        stats.bootstrap_rank(x[:2], y[:2], 100, 0)
    flat = stats.bootstrap_rank(x[:3], np.ones((3, 2)), 100, 0)
    assert not flat.complete and stats.verdict(flat, 0.0, 0.5)[0] == stats.OPEN


def test_bootstrap_rank_rows_match_the_scalar_spearman():
    from selectbench.evaluation.accuracy import spearman

    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, (50, 7)).astype(float)   # many ties
    b = rng.normal(size=(50, 7))
    keep = (np.ptp(a, 1) > 0) & (np.ptp(b, 1) > 0)
    rows = stats._spearman_rows(a[keep], b[keep])
    assert rows == pytest.approx([spearman(x, y) for x, y in zip(a[keep], b[keep])], abs=1e-12)

    def reference(x, y, draws, seed):  # one draw at a time, as the interval is defined
        rng, vals = np.random.default_rng(seed), []
        for _ in range(draws):
            s, r = rng.integers(0, len(y), len(y)), rng.integers(0, y.shape[1], y.shape)
            xs, ys = x[s[:, None], r].mean(1), y[s[:, None], r].mean(1)
            if np.ptp(xs) > 0 and np.ptp(ys) > 0:
                vals.append(spearman(xs, ys))
        return np.quantile(vals, [0.025, 0.975]) if len(vals) >= draws / 2 else [np.nan, np.nan]

    x, y = rng.integers(0, 3, (6, 3)).astype(float), rng.normal(size=(6, 3))
    iv = stats.bootstrap_rank(x, y, 400, 1)
    assert [iv.lo, iv.hi] == pytest.approx(reference(x, y, 400, 1), abs=1e-12)
    y[2, 1] = np.nan  # a missing value: the row-by-row path, same draws and same rule
    iv = stats.bootstrap_rank(x, y, 400, 1)
    assert [iv.lo, iv.hi] == pytest.approx(reference(x, y, 400, 1), abs=1e-12, nan_ok=True)


def test_replicate_seeds_depend_on_the_name_only():
    seeds = {r: replicate_seed(0, r) for r in ("r1", "r2", "r3")}
    assert len(set(seeds.values())) == 3 and all(0 <= s < 2 ** 31 for s in seeds.values())
    assert replicate_seed(0, "r2") == seeds["r2"] and replicate_seed(1, "r2") != seeds["r2"]


def test_inconclusive_says_what_would_decide_it():
    se = math.sqrt(0.02 ** 2 / 3 + 0.0001)  # replicate sd 0.02 over 3, test-item variance 1e-4
    iv = stats.Interval(0.03, 0.03 - 4.3 * se, 0.03 + 4.3 * se, 3, 0.02, se, 2.5, True)
    # half-width 0.03 (the effect) needs sd^2 / ((0.03 / 1.96)^2 - 1e-4) = 2.98 -> at least n + 1 = 4
    assert stats.verdict(iv, 0.01) == (stats.OPEN, "about 4 replicates at this spread")
    wide = stats.Interval(0.03, -0.2, 0.26, 3, 0.02, 0.1, 500.0, True)  # test items alone are too wide
    assert "bigger test set" in stats.verdict(wide, 0.01)[1]
    boot = stats.Interval(0.6, 0.3, 0.9, 3, 0.1, 0.1, math.inf, True, "bootstrap")
    assert stats.verdict(boot, 0.0, 0.5)[1].startswith("more shifts")
