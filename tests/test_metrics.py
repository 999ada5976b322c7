"""Known-answer, edge-case and property tests for selectbench.metrics."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from selectbench.core.errors import UserError
from selectbench.evaluation import accuracy, inputs, noise, quality
from selectbench.evaluation import counts as count_stats


def approx(x, **kw):
    return pytest.approx(x, **kw)


# --------------------------------------------------------------------------- topk_accuracy


def test_topk_known_answers():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([1, 1, 0, 2])
    assert accuracy.topk_accuracy(scores, labels, k=1) == 0.25
    assert accuracy.topk_accuracy(scores, labels, k=2) == 0.5
    assert accuracy.topk_accuracy(scores, labels, k=3) == 1.0
    assert accuracy.topk_accuracy(scores, labels, k=50) == 1.0


def test_topk_ties_follow_argmax():
    constant = np.zeros((4, 3))
    assert accuracy.topk_accuracy(constant, [0, 1, 2, 0], k=1) == 0.5  # argmax says class 0
    assert accuracy.topk_accuracy(constant, [0, 1, 2, 2], k=2) == 0.5  # top-2 is {0, 1}


def test_topk_edges_and_errors():
    assert math.isnan(accuracy.topk_accuracy(np.zeros((0, 5)), np.zeros(0, dtype=int)))
    assert accuracy.topk_accuracy(torch.tensor([[1.0, 2.0]]), torch.tensor([1])) == 1.0
    with pytest.raises(inputs.MetricInputError):
        accuracy.topk_accuracy(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError):
        accuracy.topk_accuracy(np.zeros((2, 3)), [0])
    with pytest.raises(UserError):
        accuracy.topk_accuracy(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(inputs.MetricInputError):
        accuracy.topk_accuracy(np.zeros((2, 3)), [0, 1], k=0)


def test_true_class_probability_known_answers_and_edges():
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [np.log(3.0), 0.0, 0.0, 0.0], [1000.0, 0.0, 0.0, 0.0]])
    p = accuracy.true_class_probability(logits, [2, 0, 1])
    assert p == approx([0.25, 0.5, 0.0], abs=1e-12)  # uniform -> 1/C; huge logits do not overflow
    assert accuracy.true_class_probability(np.zeros((1, 10)), [9]) == approx([0.1])  # n = 1
    assert accuracy.true_class_probability(np.zeros((0, 3)), np.zeros(0, dtype=int)).shape == (0,)
    with pytest.raises(inputs.MetricInputError):
        accuracy.true_class_probability(np.zeros((2, 3)), [0, 3])
    with pytest.raises(inputs.MetricInputError):
        accuracy.true_class_probability(np.zeros((2, 3)), [0])


def test_topk_property_matches_argmax_and_is_monotone():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(300, 7))
    y = rng.integers(0, 7, 300)
    assert accuracy.topk_accuracy(s, y, 1) == approx(np.mean(s.argmax(1) == y))
    accs = [accuracy.topk_accuracy(s, y, k) for k in range(1, 8)]
    assert all(a <= b for a, b in zip(accs, accs[1:]))
    assert accs[-1] == 1.0
    # Softmax does not change the ranking.
    p = torch.softmax(torch.tensor(s), 1).numpy()
    assert [accuracy.topk_accuracy(p, y, k) for k in range(1, 8)] == accs


# --------------------------------------------------------------------------- per_class_accuracy


def test_per_class_accuracy_known_answer():
    acc = accuracy.per_class_accuracy(pred=[0, 1, 1, 2, -1], labels=[0, 0, 1, 2, 2], num_classes=4)
    assert acc[:3] == approx([0.5, 1.0, 0.5])
    assert math.isnan(acc[3])


def test_per_class_accuracy_edges():
    assert np.isnan(accuracy.per_class_accuracy([], [], 3)).all()
    with pytest.raises(inputs.MetricInputError):
        accuracy.per_class_accuracy([0], [5], 3)
    with pytest.raises(inputs.MetricInputError):
        accuracy.per_class_accuracy([0], [0], 0)


def test_per_class_accuracy_property_weighted_mean_is_overall():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 6, 500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 6, 500))
    acc = accuracy.per_class_accuracy(p, y, 6)
    w = np.bincount(y, minlength=6)
    assert np.sum(acc * w) / w.sum() == approx(np.mean(p == y))


# --------------------------------------------------------------------------- binomial_ci


@pytest.mark.parametrize(
    "x,n,lo,hi",
    # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score without correction).
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_binomial_ci_matches_newcombe(x, n, lo, hi):
    got = accuracy.binomial_ci(x, n)
    assert got == approx((lo, hi), abs=5e-5)


def test_binomial_ci_closed_forms_and_edges():
    z2 = 1.959963984540054**2
    assert accuracy.binomial_ci(0, 10)[1] == approx(z2 / (10 + z2))  # Wilson upper bound at x = 0
    lo, hi = accuracy.binomial_ci(5, 10)
    assert lo + hi == approx(1.0)  # symmetric around 1/2
    assert all(math.isnan(v) for v in accuracy.binomial_ci(0, 0))
    lo, hi = accuracy.binomial_ci(np.array([0, 5, 10]), 10)
    assert lo.shape == (3,) and lo[0] == 0 and hi[2] == 1
    assert accuracy.binomial_ci(50, 100, alpha=0.01)[0] < accuracy.binomial_ci(50, 100)[0]
    with pytest.raises(inputs.MetricInputError):
        accuracy.binomial_ci(11, 10)
    with pytest.raises(inputs.MetricInputError):
        accuracy.binomial_ci(1, 10, alpha=1.5)


def test_binomial_ci_property_coverage():
    rng = np.random.default_rng(3)
    p, n = 0.3, 60
    x = rng.binomial(n, p, size=4000)
    lo, hi = accuracy.binomial_ci(x, n)
    cover = np.mean((lo <= p) & (p <= hi))
    assert 0.93 <= cover <= 0.97
    assert np.all((lo <= x / n) & (x / n <= hi))


# --------------------------------------------------------------------------- mean_accuracy_ci


def test_mean_accuracy_ci_reduces_to_wilson():
    m, lo, hi = accuracy.mean_accuracy_ci([0.3], [263])
    assert m == 0.3 and (lo, hi) == approx(accuracy.binomial_ci(0.3 * 263, 263))
    m, lo, hi = accuracy.mean_accuracy_ci([0.5, 0.7], [100, 100])
    assert m == approx(0.6) and (lo, hi) == approx(accuracy.binomial_ci(120, 200))


def test_mean_accuracy_ci_edges():
    assert all(math.isnan(v) for v in accuracy.mean_accuracy_ci([], []))
    m, lo, hi = accuracy.mean_accuracy_ci([1.0, 1.0], [50, 20])
    assert m == 1.0 and hi == 1.0 and 0.9 < lo < 1.0
    with pytest.raises(inputs.MetricInputError, match="percent"):
        accuracy.mean_accuracy_ci([78.0], [100])
    with pytest.raises(inputs.MetricInputError):
        accuracy.mean_accuracy_ci([0.5], [0])
    with pytest.raises(inputs.MetricInputError):
        accuracy.mean_accuracy_ci([0.5, 0.4], [10])


def test_mean_accuracy_ci_property_coverage_heterogeneous_tasks():
    rng = np.random.default_rng(4)
    p = np.array([0.2, 0.5, 0.9, 0.95, 0.6])
    n = np.array([40, 200, 80, 30, 120])
    cover = 0
    reps = 1500
    for _ in range(reps):
        m, lo, hi = accuracy.mean_accuracy_ci(rng.binomial(n, p) / n, n)
        cover += lo <= p.mean() <= hi
    assert cover / reps >= 0.93  # documented as conservative when accuracies differ


# --------------------------------------------------------------------------- knn_classify


BANK = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
BANK_Y = np.array([0, 1, 1])


def test_knn_known_answer():
    probs = quality.knn_classify(BANK, BANK_Y, [[2.0, 0.0]], num_classes=3, k=2, temperature=0.5)
    w0, w1 = math.exp(1 / 0.5), math.exp(math.sqrt(0.5) / 0.5)  # neighbours 0 (sim 1) and 2 (sim .707)
    assert probs[0] == approx([w0 / (w0 + w1), w1 / (w0 + w1), 0.0])
    # k > M uses the whole bank: entry 1 (sim 0, weight 1) joins class 1.
    probs = quality.knn_classify(BANK, BANK_Y, [[2.0, 0.0]], num_classes=3, k=10, temperature=0.5)
    assert probs[0] == approx([w0 / (w0 + w1 + 1), (w1 + 1) / (w0 + w1 + 1), 0.0])


def test_knn_thin_banks():
    empty = quality.knn_classify(np.zeros((0, 2)), [], [[1.0, 0.0], [0.0, 1.0]], num_classes=4)
    assert empty == approx(np.full((2, 4), 0.25))
    assert quality.knn_classify(BANK, BANK_Y, np.zeros((0, 2)), 3).shape == (0, 3)
    # A zero query is equally similar to everything: votes follow label counts.
    probs = quality.knn_classify(BANK, BANK_Y, [[0.0, 0.0]], num_classes=2, k=3)
    assert probs[0] == approx([1 / 3, 2 / 3])
    with pytest.raises(inputs.MetricInputError):
        quality.knn_classify(BANK, BANK_Y, [[1.0, 0.0, 0.0]], 3)
    with pytest.raises(inputs.MetricInputError):
        quality.knn_classify(BANK, [0, 1, 5], [[1.0, 0.0]], 3)
    with pytest.raises(inputs.MetricInputError):
        quality.knn_classify(BANK, BANK_Y, [[1.0, 0.0]], 3, temperature=0)


def test_knn_property_invariances_and_clusters():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 16)) * 5
    y = np.repeat(np.arange(4), 10)
    bank = centres[y] + rng.normal(size=(40, 16))
    qy = rng.integers(0, 4, 100)
    queries = centres[qy] + rng.normal(size=(100, 16))
    probs = quality.knn_classify(bank, y, queries, num_classes=5, k=10)
    assert probs.sum(1) == approx(np.ones(100))
    assert np.all(probs[:, 4] == 0)  # class absent from the bank
    assert accuracy.topk_accuracy(probs, qy) == 1.0
    perm = rng.permutation(40)
    # Row order and vector length of the bank do not matter.
    assert quality.knn_classify(bank[perm] * 3.0, y[perm], queries, 5, k=10) == approx(probs, abs=1e-5)


# --------------------------------------------------------------------------- inception_score


def test_inception_score_known_answers():
    assert quality.inception_score(np.full((10, 4), 0.25)) == approx((1.0, 0.0))
    assert quality.inception_score(np.eye(5))[0] == approx(5.0)
    # Hand example: p(y) = (.75, .25); KL of rows = log(4/3) and .5 log(2/3) + .5 log 2.
    mean, std = quality.inception_score([[1.0, 0.0], [0.5, 0.5]])
    assert mean == approx(math.exp((math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2))
    assert std == 0.0


def test_inception_score_splits():
    p = np.vstack([np.eye(4), np.full((4, 4), 0.25)])  # first half scores 4, second half 1
    mean, std = quality.inception_score(p, splits=2)
    assert (mean, std) == approx((2.5, 1.5))


def test_inception_score_edges():
    assert all(math.isnan(v) for v in quality.inception_score(np.zeros((0, 3))))
    with pytest.raises(inputs.MetricInputError, match="probabilities"):
        quality.inception_score([[2.0, -1.0]])  # logits
    with pytest.raises(inputs.MetricInputError):
        quality.inception_score(np.eye(3), splits=4)


def test_inception_score_property_bounds_and_class_permutation():
    rng = np.random.default_rng(6)
    p = rng.dirichlet(np.full(8, 0.3), size=200)
    mean, _ = quality.inception_score(p)
    assert 1.0 <= mean <= 8.0
    assert quality.inception_score(p[:, rng.permutation(8)])[0] == approx(mean)


# --------------------------------------------------------------------------- mmd_rbf


def test_mmd_known_answer_single_points():
    # One point each, distance 10 = sigma: 1000 * (1 + 1 - 2 exp(-1/2)).
    assert quality.mmd_rbf([[0.0, 0.0]], [[6.0, 8.0]]) == approx(1000 * (2 - 2 * math.exp(-0.5)))
    assert quality.mmd_rbf([[0.0]], [[1.0]], sigma=1.0, scale=1.0) == approx(2 - 2 * math.exp(-0.5))


def test_mmd_known_answer_two_by_one():
    # x = {0, 2}, y = {1}, sigma = 1, V-statistic means over all pairs (diagonal included).
    e = math.exp
    kxx = (2 + 2 * e(-2)) / 4
    kxy = e(-0.5)
    assert quality.mmd_rbf([[0.0], [2.0]], [[1.0]], sigma=1.0, scale=1.0) == approx(kxx + 1 - 2 * kxy)


def test_mmd_identical_zero_and_edges():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert quality.mmd_rbf(x, x) == approx(0.0, abs=1e-9)
    assert quality.mmd_rbf(x, x[::-1]) == approx(0.0, abs=1e-9)
    assert math.isnan(quality.mmd_rbf(np.zeros((0, 3)), np.zeros((2, 3))))
    with pytest.raises(inputs.MetricInputError):
        quality.mmd_rbf(np.zeros((2, 3)), np.zeros((2, 4)))


def test_mmd_property_chunking_symmetry_and_shift():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(120, 8))
    y = rng.normal(size=(90, 8)) + 0.5
    ref = quality.mmd_rbf(x, y)
    assert quality.mmd_rbf(x, y, chunk=7) == approx(ref, rel=1e-10)
    assert quality.mmd_rbf(y, x) == approx(ref, rel=1e-10)
    assert quality.mmd_rbf(torch.tensor(x), torch.tensor(y)) == approx(ref, rel=1e-10)
    shifts = [quality.mmd_rbf(x, x + d) for d in (0.5, 1.0, 2.0, 4.0)]
    assert shifts[0] > 0 and all(a < b for a, b in zip(shifts, shifts[1:]))


def test_unbiased_mmd_known_answer_and_edges():
    # x = {0, 2}, y = {1, 3}, sigma = 1: within-set means leave the diagonal out.
    e = math.exp
    kxy = (3 * e(-0.5) + e(-4.5)) / 4
    got = quality.mmd_rbf([[0.0], [2.0]], [[1.0], [3.0]], sigma=1.0, scale=1.0, unbiased=True)
    assert got == approx(e(-2) + e(-2) - 2 * kxy)
    assert got < 0  # an unbiased estimate can fall below 0
    assert math.isnan(quality.mmd_rbf([[0.0], [2.0]], [[1.0]], unbiased=True))  # n = 1: undefined


def test_unbiased_mmd_is_zero_on_average_for_one_distribution():
    """Two samples of one distribution: the V-statistic is positive every time, the U-statistic
    averages to 0 (the floor the report shows beside CMMD)."""
    rng = np.random.default_rng(3)
    v, u = [], []
    for _ in range(40):
        x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
        v.append(quality.mmd_rbf(x, y, sigma=2.0, scale=1.0))
        u.append(quality.mmd_rbf(x, y, sigma=2.0, scale=1.0, unbiased=True))
    assert min(v) > 0
    assert abs(np.mean(u)) < 3 * np.std(u) / math.sqrt(len(u))
    assert np.mean(v) > 10 * abs(np.mean(u))


def test_median_bandwidth():
    assert quality.median_bandwidth([[0.0], [1.0], [3.0]]) == approx(2.0)   # distances 1, 3, 2
    assert quality.median_bandwidth([[0.0, 0.0], [3.0, 4.0]]) == approx(5.0)
    assert math.isnan(quality.median_bandwidth([[1.0, 2.0]]))
    big = np.random.default_rng(0).normal(size=(3000, 8))
    assert quality.median_bandwidth(big, max_items=500) == approx(4.0, rel=0.1)  # sqrt(2 * 8)


# --------------------------------------------------------------------------- clip_score


def test_clip_score_known_answers():
    img = [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]
    txt = [[1.0, 1.0], [0.0, 5.0], [-1.0, 0.0]]  # cos .7071, 1, -1 (clipped to 0)
    assert quality.clip_score(img, txt) == approx(100 * (math.sqrt(0.5) + 1) / 3)
    assert quality.clip_score(img, txt, weight=2.5) == approx(2.5 * (math.sqrt(0.5) + 1) / 3)
    assert math.isnan(quality.clip_score(np.zeros((0, 4)), np.zeros((0, 4))))
    with pytest.raises(inputs.MetricInputError):
        quality.clip_score(img, txt[:2])


# --------------------------------------------------------------------------- dataset analytics


def test_class_counts():
    assert count_stats.class_counts([0, 2, 2, 3], 5).tolist() == [1, 0, 2, 1, 0]
    assert count_stats.class_counts([], 2).tolist() == [0, 0]
    with pytest.raises(inputs.MetricInputError):
        count_stats.class_counts([0, 5], 5)
    with pytest.raises(inputs.MetricInputError):
        count_stats.class_counts([0.5], 5)


def test_gini_known_answers():
    assert count_stats.gini([7, 7, 7]) == approx(0.0, abs=1e-12)
    assert count_stats.gini([0, 0, 0, 5]) == approx(0.75)
    assert count_stats.gini([1, 2, 3]) == approx(2 / 9)  # sum|xi-xj| = 8 over 2 * 9 * mean 2
    assert count_stats.gini([0] * 999 + [1]) == approx(0.999)
    assert math.isnan(count_stats.gini([])) and math.isnan(count_stats.gini([0, 0]))
    with pytest.raises(inputs.MetricInputError):
        count_stats.gini([1, -1])


def test_gini_property_matches_pairwise_definition():
    rng = np.random.default_rng(9)
    x = rng.integers(0, 1000, 50).astype(float)
    pairwise = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert count_stats.gini(x) == approx(pairwise)
    assert count_stats.gini(x * 13) == approx(pairwise)
    assert count_stats.gini(rng.permutation(x)) == approx(pairwise)


def test_long_tail_coverage_summary():
    counts = [0, 100, 600, 1300]
    assert count_stats.long_tail(counts, 500) == {
        "classes_below": 2,
        "share_of_classes_below": 0.5,
        "share_of_images_in_tail_classes": approx(100 / 2000),
    }
    assert count_stats.long_tail(counts, 100)["classes_below"] == 1  # strictly below
    assert math.isnan(count_stats.long_tail([0, 0], 5)["share_of_images_in_tail_classes"])
    assert count_stats.coverage(counts) == 3
    assert count_stats.coverage([]) == 0
    summary = count_stats.count_summary([0, 200, 231, 246777])
    assert summary == {"min": 0, "median": 215.5, "max": 246777, "images": 247208, "coverage": 3}
    assert isinstance(summary["images"], int)
    with pytest.raises(inputs.MetricInputError):
        count_stats.count_summary([])


# --------------------------------------------------------------------------- spearman


def test_spearman_known_answers():
    assert accuracy.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert accuracy.spearman([1, 2, 3], [30, 20, 10]) == approx(-1.0)
    assert accuracy.spearman([1, np.nan, 2, 3, 4], [1, 9, 3, np.nan, 4]) == approx(1.0)  # NaN pairs dropped


def test_spearman_edges():
    assert math.isnan(accuracy.spearman([1, 2], [1, 2]))
    assert math.isnan(accuracy.spearman([1, np.nan, 2, 3], [1, 2, np.nan, 3]))  # two pairs left
    assert math.isnan(accuracy.spearman([1, 1, 1, 1], [1, 2, 3, 4]))
    assert math.isnan(accuracy.spearman([], []))
    with pytest.raises(inputs.MetricInputError):
        accuracy.spearman([1, 2, 3], [1, 2])


def test_spearman_property_scipy_ties_and_monotone_invariance():
    rng = np.random.default_rng(10)
    a = rng.integers(0, 10, 80).astype(float)
    b = a + rng.integers(0, 6, 80)
    assert accuracy.spearman(a, b) == approx(stats.spearmanr(a, b).statistic)
    assert accuracy.spearman(np.exp(a), b**3) == approx(accuracy.spearman(a, b))


# --------------------------------------------------------------------------- corruption_error


def test_corruption_error_known_answer():
    model = [[0.2, 0.4], [0.5, 0.5]]
    base = [[0.4, 0.4], [0.5, 1.0]]
    assert accuracy.corruption_error(model, base) == approx((0.6 / 0.8 + 1.0 / 1.5) / 2)
    assert accuracy.corruption_error([0.2, 0.3], [0.4, 0.3]) == approx(0.75)  # 1-D: one severity each
    assert accuracy.corruption_error(base, base) == approx(1.0)
    assert math.isnan(accuracy.corruption_error(np.zeros((0, 5)), np.zeros((0, 5))))
    with pytest.raises(inputs.MetricInputError, match="zero baseline"):
        accuracy.corruption_error([[0.1, 0.2]], [[0.0, 0.0]])
    with pytest.raises(inputs.MetricInputError):
        accuracy.corruption_error([[0.1, 0.2]], [[0.1, 0.2, 0.3]])


def test_corruption_error_property_scales_linearly():
    rng = np.random.default_rng(11)
    base = rng.uniform(0.3, 0.9, size=(15, 5))
    model = rng.uniform(0.1, 0.9, size=(15, 5))
    assert accuracy.corruption_error(model * 0.5, base) == approx(0.5 * accuracy.corruption_error(model, base))


# --------------------------------------------------------------------------- label noise


def test_label_precision_known_answer():
    overall, per_class = noise.label_precision(assigned=[0, 0, 1, 1, 1, 3], truth=[0, -1, 1, 2, 1, 3])
    assert overall == approx(4 / 6)
    assert per_class[[0, 1, 3]] == approx([0.5, 2 / 3, 1.0])
    assert math.isnan(per_class[2])
    _, per_class = noise.label_precision([0], [0], num_classes=3)
    assert per_class.shape == (3,)
    overall, per_class = noise.label_precision([], [])
    assert math.isnan(overall) and per_class.shape == (0,)
    with pytest.raises(inputs.MetricInputError):
        noise.label_precision([0, 1], [0, -2])
    with pytest.raises(inputs.MetricInputError):
        noise.label_precision([-1], [0])


def _blobs(n, c, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 4
    truth = rng.integers(0, c, n)
    return centres[truth] + rng.normal(size=(n, d)), truth, rng


def test_estimate_label_noise_recovers_uniform_flips():
    c = 5
    x, truth, rng = _blobs(1000, c, 12, seed=12)
    noisy = truth.copy()
    flip = rng.choice(len(truth), size=200, replace=False)
    noisy[flip] = (truth[flip] + rng.integers(1, c, size=200)) % c  # always a different class
    precision, per_class_precision = noise.label_precision(noisy, truth)
    assert 1 - precision == approx(0.2)
    rate, per_class = noise.estimate_label_noise(x, noisy, c)
    assert abs(rate - 0.2) <= 0.07
    assert abs(rate - (1 - precision)) <= 0.03
    assert np.max(np.abs(per_class - (1 - per_class_precision))) <= 0.07
    # Same seed, same answer.
    again, per_class_again = noise.estimate_label_noise(x, noisy, c)
    assert again == rate and np.array_equal(per_class_again, per_class)


def test_estimate_label_noise_clean_labels_and_edges():
    x, truth, _ = _blobs(400, 4, 8, seed=13)
    rate, per_class = noise.estimate_label_noise(x, truth, num_classes=6, folds=4)
    assert rate <= 0.01
    assert np.isnan(per_class[4:]).all() and (per_class[:4] <= 0.02).all()
    # A single-sample class cannot be assessed and must not disturb the others.
    lone = np.vstack([x, x[:1] + 100.0])
    rate, per_class = noise.estimate_label_noise(lone, np.append(truth, 4), num_classes=5, folds=4)
    assert rate <= 0.01 and math.isnan(per_class[4]) and (per_class[:4] <= 0.02).all()
    rate, per_class = noise.estimate_label_noise(x[:10], np.full(10, 2), 3)
    assert rate == 0.0 and per_class[2] == 0.0 and np.isnan(per_class[[0, 1]]).all()
    rate, per_class = noise.estimate_label_noise(np.zeros((0, 8)), [], 3)
    assert math.isnan(rate) and np.isnan(per_class).all()
    with pytest.raises(inputs.MetricInputError):
        noise.estimate_label_noise(x[:3], [0, 1, 2], 4, folds=5)
    with pytest.raises(inputs.MetricInputError):
        noise.estimate_label_noise(x, truth[:-1], 4)


# --- noise estimator validated against the exact figure -----------------------------------------
# Per class (of the *given* label) a known share of the samples carries that label while belonging
# to another class. Classes 0 and 1 are a fine-grained pair (centres 0.9 sd apart per dimension
# instead of ~4) whose wrong labels come from each other; the others' come from the coarse classes.
NOISE_RATES = (0.30, 0.20, 0.0, 0.05, 0.10, 0.15, 0.25, 0.40)


def _injected_noise(seed, n=150, d=16):
    rng = np.random.default_rng(seed)
    c = len(NOISE_RATES)
    centres = rng.standard_normal((c, d)) * 3.0
    centres[1] = centres[0] + rng.standard_normal(d) * 0.9
    given, truth = [], []
    for i, r in enumerate(NOISE_RATES):
        m = int(round(r * n))
        wrong = np.full(m, 1 - i) if i in (0, 1) else rng.choice([j for j in range(2, c) if j != i], m)
        given.append(np.full(n, i))
        truth.append(np.concatenate([np.full(n - m, i), wrong]))
    given, truth = np.concatenate(given), np.concatenate(truth)
    x = centres[truth] + rng.standard_normal((len(truth), d))
    exact_rate = 1 - noise.label_precision(given, truth, c)[0]
    exact_per_class = 1 - noise.label_precision(given, truth, c)[1]
    return x, given, c, exact_rate, exact_per_class


def _tracks_truth(rate, per_class, exact_rate, exact_per_class) -> bool:
    """Thresholds from 6 seeds of the estimator (Spearman 0.976-1.0, overall error <= 0.019,
    per-class mean error <= 0.031), with margin."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)  # a constant estimate: rho is nan
        rho = stats.spearmanr(per_class, exact_per_class)[0]
    return bool(rho > 0.9 and abs(rate - exact_rate) < 0.04 and np.mean(np.abs(per_class - exact_per_class)) < 0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimate_label_noise_tracks_exact_per_class_noise(seed):
    x, given, c, exact_rate, exact_per_class = _injected_noise(seed)
    assert exact_per_class == approx(np.array(NOISE_RATES), abs=0.004)
    rate, per_class = noise.estimate_label_noise(x, given, c, seed=0)
    assert _tracks_truth(rate, per_class, exact_rate, exact_per_class), (rate, per_class)
    # The confusable pair's noise is found, not only the coarse classes' noise.
    assert per_class[0] > 0.2 and per_class[1] > 0.15 and per_class[2] < 0.03


def test_broken_noise_estimators_fail_the_validation():
    x, given, c, exact_rate, exact_per_class = _injected_noise(0)
    constant = np.full(c, exact_rate)  # right on average, blind per class
    assert not _tracks_truth(exact_rate, constant, exact_rate, exact_per_class)
    rate, per_class = noise.estimate_label_noise(x, given, c, seed=0)
    shuffled = per_class[np.random.default_rng(0).permutation(c)]  # per-class values on the wrong classes
    assert not _tracks_truth(rate, shuffled, exact_rate, exact_per_class)
    assert not _tracks_truth(0.0, np.zeros(c), exact_rate, exact_per_class)  # "no noise anywhere"
