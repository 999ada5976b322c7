"""Curation strategies as pure functions of labels, captions and embeddings (no files, no images).

Each returns row numbers into its candidate set, the label each selected row takes, and the
score that selected it, so every curated index can say why an item is in it."""
from __future__ import annotations

import numpy as np

from selectbench.core.arrays import unit_rows
from selectbench.core.errors import UserError


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator,
                    num_classes: int) -> np.ndarray:
    """Up to per_class random rows of each class (the expert-curated IN1000 analogue)."""
    rows = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        take = min(per_class, len(members))
        rows.append(np.sort(rng.choice(members, size=take, replace=False)))
    return np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)


def knn_search(queries: np.ndarray, bank: np.ndarray, k: int, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k with faiss, streamed over query batches so memory stays flat."""
    import faiss

    bank = unit_rows(bank)
    k = min(k, len(bank))
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank)
    sims = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), batch):
        s, j = index.search(unit_rows(queries[i:i + batch]), k)
        sims[i:i + batch], ids[i:i + batch] = s, j
    return sims, ids


def knn_transfer(queries: np.ndarray, query_labels: np.ndarray, bank: np.ndarray, k: int,
                 dedup: str, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SELECT's img2img: each query's k nearest bank items take the query's label.

    dedup='none' keeps every (query, neighbour) pair (a bank item can appear several times);
    'vote' keeps each bank item once, with the label of the similarity-weighted majority of
    the queries that retrieved it; 'drop' keeps an item only if all its queries agree.
    """
    if dedup not in ("none", "vote", "drop"):
        raise UserError(f"dedup: unknown value {dedup!r}; allowed: none, vote, drop")
    if len(queries) == 0 or len(bank) == 0:
        e = np.empty(0, dtype=np.int64)
        return e, e.copy(), np.empty(0, dtype=np.float32)
    sims, ids = knn_search(queries, bank, k)
    item = ids.ravel()
    lab = np.repeat(query_labels, ids.shape[1])
    sim = sims.ravel()
    keep = item >= 0
    item, lab, sim = item[keep], lab[keep], sim[keep]
    if dedup == "none":
        order = np.lexsort((lab, item))
        return item[order], lab[order], sim[order]
    votes = np.zeros((len(bank), num_classes), dtype=np.float64)
    np.add.at(votes, (item, lab), sim.astype(np.float64))
    hits = np.zeros((len(bank), num_classes), dtype=np.int64)
    np.add.at(hits, (item, lab), 1)
    used = np.flatnonzero(hits.sum(1) > 0)
    winner = votes[used].argmax(1)
    best = np.zeros(len(bank), dtype=np.float32)
    np.maximum.at(best, item, sim)
    if dedup == "drop":
        unanimous = (hits[used] > 0).sum(1) == 1
        used, winner = used[unanimous], winner[unanimous]
    return used, winner, best[used]


def single_mention(mentions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows naming exactly one class, and that class (LAIONet's first filter)."""
    rows = np.flatnonzero(mentions.sum(1) == 1)
    return rows, mentions[rows].argmax(1)


def caption_similarity(mentions: np.ndarray, caption_emb: np.ndarray,
                       definition_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LAIONet's candidates, captions naming one class: (rows, class, caption-definition cosine)."""
    rows, labels = single_mention(mentions)
    return rows, labels, np.einsum("nd,nd->n", unit_rows(caption_emb[rows]), unit_rows(definition_emb)[labels])


def text_filter(mentions: np.ndarray, caption_emb: np.ndarray, definition_emb: np.ndarray,
                threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LAIONet: one class named, and caption-definition cosine similarity >= threshold."""
    if not -1.0 <= threshold <= 1.0:
        raise UserError(f"curation.clip_threshold: must be in [-1, 1], got {threshold}")
    rows, labels, sims = caption_similarity(mentions, caption_emb, definition_emb)
    keep = sims >= threshold
    return rows[keep], labels[keep], sims[keep].astype(np.float32)


def knn_vote(emb: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray, k: int,
             num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Label each row by a similarity-weighted vote of its k nearest labelled bank items.

    Returns (label, confidence) where confidence is the winning share of the vote weight.
    """
    if len(emb) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    sims, ids = knn_search(emb, bank, k)
    w = np.exp(sims / 0.07)  # DINO's temperature: sharp weighting of the closest neighbours
    votes = np.zeros((len(emb), num_classes))
    np.add.at(votes, (np.repeat(np.arange(len(emb)), ids.shape[1]), bank_labels[ids.ravel()]), w.ravel())
    label = votes.argmax(1)
    conf = votes[np.arange(len(emb)), label] / np.maximum(votes.sum(1), 1e-12)
    return label, conf.astype(np.float32)


def cap_per_class(labels: np.ndarray, scores: np.ndarray, cap: int | None) -> np.ndarray:
    """Positions to keep so no class exceeds cap, keeping each class's highest scores."""
    if cap is None:
        return np.arange(len(labels))
    order = np.lexsort((-scores, labels))
    lab_sorted = labels[order]
    start = np.searchsorted(lab_sorted, lab_sorted, side="left")
    rank = np.arange(len(order)) - start
    return np.sort(order[rank < cap])


def _spherical_kmeans(x: np.ndarray, n_clusters: int, seed: int, n_iter: int):
    import faiss

    k = max(1, min(n_clusters, len(x)))
    km = faiss.Kmeans(x.shape[1], k, niter=n_iter, seed=seed, verbose=False, spherical=True)
    km.train(x)
    return km


def image_based_filter(pool_emb: np.ndarray, target_emb: np.ndarray, n_clusters: int, seed: int,
                       n_iter: int = 20) -> np.ndarray:
    """DataComp's image-based filter: cluster the pool, keep the clusters whose centroid is the
    nearest one of some target (base) image. Returns a boolean mask over the pool."""
    x = unit_rows(pool_emb)
    km = _spherical_kmeans(x, n_clusters, seed, n_iter)
    _, pool_c = km.index.search(x, 1)
    _, target_c = km.index.search(unit_rows(target_emb), 1)
    return np.isin(pool_c.ravel(), np.unique(target_c.ravel()))


def semdedup(emb: np.ndarray, n_clusters: int, epsilon: float, seed: int, n_iter: int = 20) -> np.ndarray:
    """SemDeDup (Abbas et al. 2023): sorted positions of the items kept. k-means in embedding
    space; within a cluster, items are visited from the least to the most similar to the centroid
    (the paper keeps the least prototypical of a group) and an item is dropped when its cosine
    similarity to an item already kept exceeds 1 - epsilon, so one item per duplicate group stays."""
    if not 0.0 <= epsilon <= 2.0:
        raise UserError(f"semdedup.epsilon: must be in [0, 2], got {epsilon}")
    if len(emb) == 0:
        return np.empty(0, dtype=np.int64)
    x = unit_rows(emb)
    km = _spherical_kmeans(x, n_clusters, seed, n_iter)
    sim_c, cluster = km.index.search(x, 1)
    cluster, sim_c = cluster.ravel(), sim_c.ravel()
    keep = []
    for c in np.unique(cluster):
        members = np.flatnonzero(cluster == c)
        members = members[np.lexsort((members, sim_c[members]))]
        kept = np.empty((len(members), x.shape[1]), dtype=x.dtype)  # one row per kept item, no N x N matrix
        rows, n = [], 0
        for m in members:
            if n == 0 or (kept[:n] @ x[m]).max() <= 1.0 - epsilon:
                kept[n], n = x[m], n + 1
                rows.append(m)
        keep.append(np.asarray(rows, dtype=np.int64))
    return np.sort(np.concatenate(keep))


def clip_score_filter(image_emb: np.ndarray, caption_emb: np.ndarray, fraction: float | None = None,
                      threshold: float | None = None, key: str = "clip_score") -> tuple[np.ndarray, np.ndarray]:
    """DataComp's CLIP-score filter: (sorted positions, their scores) of the image-caption pairs
    whose cosine similarity is among the top `fraction` (ties broken by position) or at least
    `threshold`; exactly one of the two. `key` names the setting in errors."""
    if (fraction is None) == (threshold is None):
        raise UserError(f"{key}: set exactly one of fraction and threshold (the other null)")
    score = np.einsum("nd,nd->n", unit_rows(image_emb), unit_rows(caption_emb))
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:
            raise UserError(f"{key}.threshold: must be in [-1, 1], got {threshold}")
        pos = np.flatnonzero(score >= threshold)
    else:
        if not 0.0 <= fraction <= 1.0:
            raise UserError(f"{key}.fraction: must be in [0, 1], got {fraction}")
        pos = np.sort(np.lexsort((np.arange(len(score)), -score))[:int(round(fraction * len(score)))])
    return pos, score[pos]


def clean(emb: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int) -> np.ndarray:
    """Confident-learning label cleaning: sorted positions of the items kept, i.e. all but those
    whose given label disagrees with the confident out-of-fold prediction of a logistic regression
    on `emb` (selectbench.evaluation.noise.label_issues). `emb` must be a curation-side embedding,
    never one that scores the shift."""
    from selectbench.evaluation.noise import label_issues

    if len(labels) == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(~label_issues(emb, labels, num_classes, folds, seed))
