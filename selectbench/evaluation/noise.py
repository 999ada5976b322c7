"""Label noise: exact precision against the simulation's truth, and the truth-free confident-learning estimate."""
from __future__ import annotations

import warnings

import numpy as np

from selectbench.evaluation.inputs import MetricInputError, _check_num_classes, _float_array, _int_array


def label_precision(assigned, truth, num_classes: int | None = None):
    """Precision of curated labels against ground truth: ``(overall, per_class)``.

    ``overall`` is the fraction of samples whose assigned label equals the truth; ``truth == -1``
    marks a sample that belongs to none of the classes and always counts as wrong. ``per_class[c]``
    is the precision of assigned class c (of the samples labelled c, the share truly c), ``nan``
    for classes nothing was assigned to. Its complement is the per-class label-noise rate that
    :func:`estimate_label_noise` estimates. ``num_classes`` defaults to one more than the largest
    label seen. Empty input gives ``nan`` overall.
    """
    hi = None if num_classes is None else _check_num_classes(num_classes)
    a = _int_array(assigned, "assigned", hi=hi)
    t = _int_array(truth, "truth", lo=-1, hi=hi)
    if len(a) != len(t):
        raise MetricInputError(f"truth: {len(t)} labels for {len(a)} assigned labels")
    if hi is None:
        hi = int(max(a.max(initial=-1), t.max(initial=-1))) + 1
    correct = (a == t).astype(np.float64)
    assigned_n = np.bincount(a, minlength=hi).astype(np.float64)
    right = np.bincount(a, weights=correct, minlength=hi)
    per_class = np.where(assigned_n > 0, right / np.maximum(assigned_n, 1), np.nan)
    overall = float(correct.mean()) if len(a) else float("nan")
    return overall, per_class


def _out_of_fold_probs(x: np.ndarray, y: np.ndarray, c: int, folds: int, seed: int):
    """Out-of-fold probabilities [N, C] and, per sample, whether its own label was in the training fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probs = np.zeros((len(y), c))
    seen = np.zeros(len(y), dtype=bool)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Classes smaller than `folds` are legitimate in long-tailed shifts; they just miss from
        # some training folds, which the column mapping and `seen` below handle.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(x, y))
    for train, test in splits:
        present = np.unique(y[train])
        seen[test] = np.isin(y[test], present)
        if len(present) == 1:
            probs[np.ix_(test, present)] = 1.0
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(x[train], y[train])
        classes = model[-1].classes_
        probs[np.ix_(test, classes)] = model.predict_proba(x[test])
    return probs, seen


def _confident_guess(x: np.ndarray, y: np.ndarray, c: int, folds: int, seed: int):
    """Steps 1-3 of confident learning (see estimate_label_noise): per sample, whether it is counted
    in the confident joint and the class it is counted under; None when no class has 2 samples."""
    # StratifiedKFold needs at least `folds` members in the largest class; tiny shifts get fewer folds.
    folds = min(int(folds), int(np.bincount(y, minlength=c).max()))
    if folds < 2:
        return None
    probs, seen = _out_of_fold_probs(x, y, c, int(folds), int(seed))
    # A sample whose class was missing from its training fold (a class with a single sample) has a
    # self-confidence of 0 that says nothing about its label; letting it into the mean would give
    # that class a threshold of 0, which every other sample's tiny probability passes.
    self_conf = probs[np.arange(len(y)), y] * seen
    n_seen = np.bincount(y[seen], minlength=c).astype(np.float64)
    thresholds = np.where(n_seen > 0, np.bincount(y, weights=self_conf, minlength=c) / np.maximum(n_seen, 1), np.inf)
    # The small slack keeps a sample whose probability equals the mean (e.g. all equal) above it
    # despite rounding in the mean; a zero probability never makes a sample confident.
    confident = (probs >= thresholds[None, :] - 1e-12) & (probs > 0)
    counted = confident.any(axis=1) & seen
    guess = np.argmax(np.where(confident, probs, -np.inf), axis=1)
    return counted, guess


def _checked(features, labels, num_classes: int, folds: int):
    c = _check_num_classes(num_classes)
    x = _float_array(features, "features", 2)
    y = _int_array(labels, "labels", hi=c)
    if len(y) != x.shape[0]:
        raise MetricInputError(f"labels: {len(y)} labels for {x.shape[0]} feature rows")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise MetricInputError(f"folds: expected an int >= 2, got {folds!r}")
    return c, x, y


def label_issues(features, labels, num_classes: int, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Confident learning's label issues (Northcutt et al. 2021, the off-diagonal rule of the
    confident joint, cleanlab's ``filter_by="confident_learning"``): bool [N], True where the
    sample is counted in the confident joint under a class other than its label. A sample that
    passes no class threshold, or whose class was absent from its training fold, is never flagged;
    with fewer than two classes present nothing is. Steps 1-3 of :func:`estimate_label_noise`."""
    c, x, y = _checked(features, labels, num_classes, folds)
    flagged = np.zeros(len(y), dtype=bool)
    if (np.bincount(y, minlength=c) > 0).sum() < 2:
        return flagged
    if folds > len(y):
        raise MetricInputError(f"folds: {folds} folds for only {len(y)} samples")
    guessed = _confident_guess(x, y, c, folds, seed)
    if guessed is not None:
        counted, guess = guessed
        flagged = counted & (guess != y)
    return flagged


def estimate_label_noise(features, labels, num_classes: int, folds: int = 5, seed: int = 0):
    """Estimate the label-noise rate without ground truth: ``(noise_rate, per_class_noise)``.

    Confident learning (Northcutt, Jiang & Chuang, JAIR 2021) on out-of-fold predicted
    probabilities:

    1. ``folds``-fold stratified cross-validation (shuffled with ``seed``) of a multinomial
       logistic regression on standardised ``features`` gives every sample a probability vector
       from a model that never saw its label.
    2. Threshold of class j = mean probability of j over the samples labelled j (its average
       self-confidence).
    3. Confident joint ``C[i, j]``: samples labelled i whose probability of j reaches j's threshold;
       a sample passing several thresholds goes to its most probable such class, one passing none
       is left out.
    4. Each row is rescaled to the number of samples labelled i (calibration), giving the estimated
       joint of (given label, true label).

    ``noise_rate`` is the off-diagonal share of that joint, i.e. the estimated fraction of samples
    whose label is wrong; ``per_class_noise[i]`` is the off-diagonal share of row i, the estimated
    fraction of samples *labelled* i that are wrong - the complement of :func:`label_precision`'s
    per-class value. Classes with no samples are ``nan``. With fewer than two classes present there
    is nothing to confuse them with and the estimate is 0. A class with a single sample never
    appears in the training fold that predicts that sample, so it cannot be assessed: its
    ``per_class_noise`` is ``nan``, it counts as clean in ``noise_rate``, and it takes no part in
    the other classes' estimates. Row calibration extrapolates a class's confidently-counted
    samples to all of its samples. The estimate depends on how separable
    the features are: label noise that the features cannot tell apart from signal is not found.
    """
    c, x, y = _checked(features, labels, num_classes, folds)
    n_per_class = np.bincount(y, minlength=c).astype(np.float64)
    present = n_per_class > 0
    per_class = np.where(present, 0.0, np.nan)
    if len(y) == 0:
        return float("nan"), per_class
    if present.sum() < 2:
        return 0.0, per_class
    if folds > len(y):
        raise MetricInputError(f"folds: {folds} folds for only {len(y)} samples")

    guessed = _confident_guess(x, y, c, folds, seed)
    if guessed is None:
        return float("nan"), np.full(c, np.nan)
    counted, guess = guessed
    joint = np.bincount(y[counted] * c + guess[counted], minlength=c * c).reshape(c, c).astype(np.float64)

    row = joint.sum(axis=1)
    calibrated = joint * np.where(row > 0, n_per_class / np.maximum(row, 1), 0.0)[:, None]
    diag = np.diag(calibrated).copy()
    # A class with an assessable sample always has a row (its most self-confident such sample
    # passes its own threshold). One without (a single sample, absent from its own training fold)
    # is not assessed: nan per class, and clean in the overall rate for want of evidence.
    unassessed = present & (row == 0)
    diag[unassessed] = n_per_class[unassessed]
    per_class = np.where(present & ~unassessed, 1.0 - diag / np.maximum(n_per_class, 1), np.nan)
    noise_rate = float(1.0 - diag.sum() / len(y))
    return noise_rate, per_class
