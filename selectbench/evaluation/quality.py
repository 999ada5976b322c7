"""Quality and guidance metrics on embeddings: kNN classification (SSL guidance), the Inception
Score analogue, MMD (CMMD) and CLIP score."""
from __future__ import annotations

import math

import numpy as np
from scipy.special import xlogy

from selectbench.evaluation.inputs import MetricInputError, _check_num_classes, _float_array, _int_array


def knn_classify(bank, bank_labels, queries, num_classes: int, k: int = 10, temperature: float = 0.07) -> np.ndarray:
    """Weighted kNN class probabilities, shape ``[Q, num_classes]`` (rows sum to 1).

    As in the DINO kNN evaluation used by SELECT's self-supervised guidance: bank and queries are
    L2-normalised, each query takes its ``min(k, M)`` most cosine-similar bank entries (exact
    search, ``faiss.IndexFlatIP``), neighbour j votes for its label with weight
    ``exp(sim_j / temperature)``, and votes are summed per class. DINO leaves the sums
    unnormalised; here they are divided by their total so rows are probabilities (argmax and top-k
    are unchanged).

    Explicit behaviour for thin banks:

    * a class absent from the bank gets probability 0 for every query;
    * a class with fewer than k bank entries contributes the entries it has, nothing is padded;
    * ``k > M`` uses all M entries;
    * an empty bank (M = 0) gives uniform rows ``1 / num_classes`` - chance level, and with
      :func:`topk_accuracy`'s tie rule a top-1 prediction of class 0;
    * an all-zero vector has cosine similarity 0 to everything.
    """
    import faiss

    c = _check_num_classes(num_classes)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise MetricInputError(f"k: expected a positive int, got {k!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise MetricInputError(f"temperature: expected a positive number, got {temperature!r}")
    q = _float_array(queries, "queries", 2)
    b = _float_array(bank, "bank", 2)
    y = _int_array(bank_labels, "bank_labels", hi=c)
    m = b.shape[0]
    if len(y) != m:
        raise MetricInputError(f"bank_labels: {len(y)} labels for {m} bank rows")
    if q.shape[0] == 0:
        return np.zeros((0, c))
    if m == 0:
        return np.full((q.shape[0], c), 1.0 / c)
    if b.shape[1] != q.shape[1]:
        raise MetricInputError(f"queries: dimension {q.shape[1]} differs from the bank's {b.shape[1]}")

    def unit(x):
        return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)

    index = faiss.IndexFlatIP(b.shape[1])
    index.add(unit(b))
    kk = min(int(k), m)
    sims, nn = index.search(unit(q), kk)
    # Subtracting each row's best similarity cancels in the normalisation and keeps exp() finite
    # for any temperature.
    w = np.exp((sims.astype(np.float64) - sims[:, :1]) / float(temperature))
    rows = np.repeat(np.arange(q.shape[0]), kk)
    votes = np.bincount(rows * c + y[nn.ravel()], weights=w.ravel(), minlength=q.shape[0] * c)
    votes = votes.reshape(q.shape[0], c)
    return votes / votes.sum(axis=1, keepdims=True)


def inception_score(probs, splits: int = 1):
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` as ``(mean, std)`` over ``splits``.

    ``probs`` are softmax outputs ``[N, C]`` (rows must sum to 1 within 1e-3; pass probabilities,
    not logits). Following Salimans et al. (2016), rows are cut into ``splits`` consecutive
    near-equal parts, p(y) is the mean row of each part, and the std is the population std
    (ddof=0) of the per-part scores, so ``splits=1`` gives std 0. The score lies in ``[1, C]``:
    1 when every row equals the marginal (e.g. a uniform classifier), C for confident one-hot
    rows spread evenly over all C classes. Zero rows give ``(nan, nan)``.
    """
    p = _float_array(probs, "probs", 2)
    n = p.shape[0]
    if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)) or splits < 1:
        raise MetricInputError(f"splits: expected a positive int, got {splits!r}")
    if n == 0:
        return float("nan"), float("nan")
    if splits > n:
        raise MetricInputError(f"splits: {splits} splits for only {n} rows")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3, rtol=0):
        raise MetricInputError("probs: rows must be probabilities (non-negative, summing to 1)")
    bounds = (np.arange(splits + 1) * n) // splits
    scores = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = p[lo:hi]
        marginal = part.mean(axis=0, keepdims=True)
        # xlogy gives 0*log(0) = 0, the KL convention for classes a row never predicts.
        kl = (xlogy(part, part) - xlogy(part, marginal)).sum(axis=1).mean()
        scores.append(math.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def mmd_rbf(x, y, sigma: float = 10.0, scale: float = 1000.0, *, unbiased: bool = False, chunk: int = 1024) -> float:
    """CMMD-style squared MMD between embedding sets ``x [N, D]`` and ``y [M, D]``.

    The estimator of the CMMD reference implementation (Jayasumana et al., CVPR 2024):
    Gaussian RBF kernel ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))`` with sigma = 10, and
    ``scale * (mean K_xx + mean K_yy - 2 mean K_xy)`` where each mean runs over *all* pairs,
    diagonal included. The paper's text calls this unbiased, but its released code averages the
    full kernel matrices (a V-statistic, slightly biased upward); that is what is reproduced here,
    so that numbers compare with published CMMD values and identical sets give exactly 0.

    CMMD feeds L2-normalised CLIP image embeddings; this function does not normalise, so pass
    the embeddings as CMMD would. Kernel blocks of ``chunk x chunk`` are computed in float64 with
    torch (on the inputs' device when they are torch tensors), so memory stays bounded for large
    sets. ``nan`` when either set is empty.

    ``unbiased=True`` gives the U-statistic (Gretton et al. 2012): the within-set means leave out
    the diagonal, so two samples of one distribution score 0 in expectation (single values may be
    negative); ``nan`` unless both sets have at least 2 rows.
    """
    import torch

    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise MetricInputError(f"sigma: expected a positive number, got {sigma!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise MetricInputError(f"chunk: expected a positive int, got {chunk!r}")
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    xs = torch.as_tensor(np.ascontiguousarray(_float_array(x, "x", 2)), dtype=torch.float64, device=device)
    ys = torch.as_tensor(np.ascontiguousarray(_float_array(y, "y", 2)), dtype=torch.float64, device=device)
    if xs.shape[0] == 0 or ys.shape[0] == 0:
        return float("nan")
    if xs.shape[1] != ys.shape[1]:
        raise MetricInputError(f"y: dimension {ys.shape[1]} differs from x's {xs.shape[1]}")
    gamma = 1.0 / (2.0 * float(sigma) ** 2)

    def kernel_mean(a, b):
        a_sq = (a * a).sum(dim=1)
        b_sq = (b * b).sum(dim=1)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for i in range(0, a.shape[0], chunk):
            for j in range(0, b.shape[0], chunk):
                d2 = a_sq[i : i + chunk, None] + b_sq[None, j : j + chunk] - 2.0 * a[i : i + chunk] @ b[j : j + chunk].T
                # The expansion can go slightly negative for (near-)identical rows.
                total += torch.exp(-gamma * d2.clamp_min_(0.0)).sum()
        return total / (a.shape[0] * b.shape[0])

    def within(a):
        n = a.shape[0]
        if not unbiased:
            return kernel_mean(a, a)
        return (kernel_mean(a, a) * n * n - n) / (n * (n - 1))  # k(a, a) = 1 on the diagonal

    if unbiased and (xs.shape[0] < 2 or ys.shape[0] < 2):
        return float("nan")
    with torch.no_grad():
        value = within(xs) + within(ys) - 2.0 * kernel_mean(xs, ys)
    return float(scale * value)


def median_bandwidth(x, max_items: int = 1000, seed: int = 0) -> float:
    """The median heuristic for an RBF kernel's sigma: the median Euclidean distance between
    distinct rows of ``x`` (a seeded sample of ``max_items`` rows when there are more), so the
    kernel is neither flat nor linear over the data's own scale. ``nan`` for fewer than 2 rows."""
    a = _float_array(x, "x", 2)
    if a.shape[0] < 2:
        return float("nan")
    if a.shape[0] > max_items:
        a = a[np.sort(np.random.default_rng(seed).choice(a.shape[0], size=max_items, replace=False))]
    a = a.astype(np.float64)
    sq = (a * a).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * a @ a.T, 0.0)
    return float(np.median(np.sqrt(d2[np.triu_indices(a.shape[0], k=1)])))


def clip_score(img_emb, txt_emb, *, weight: float = 100.0) -> float:
    """Mean over pairs of ``weight * max(cos(img_i, txt_i), 0)``.

    Default ``weight=100`` is the torchmetrics / common "CLIP score" scale (0-100). Hessel et al.'s
    CLIPScore uses the same formula with ``weight=2.5``; pass that to reproduce it. Clipping at 0
    happens per pair, before averaging, as both definitions do. Embeddings are L2-normalised here
    (a zero vector has cosine 0). ``nan`` for zero pairs.
    """
    a = _float_array(img_emb, "img_emb", 2)
    b = _float_array(txt_emb, "txt_emb", 2)
    if a.shape[0] != b.shape[0]:
        raise MetricInputError(f"txt_emb: {b.shape[0]} texts for {a.shape[0]} images")
    if a.shape[0] == 0:
        return float("nan")
    if a.shape[1] != b.shape[1]:
        raise MetricInputError(f"txt_emb: dimension {b.shape[1]} differs from img_emb's {a.shape[1]}")
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    cos = np.einsum("nd,nd->n", a, b) / (na * nb)
    return float(np.mean(weight * np.maximum(cos, 0.0)))
