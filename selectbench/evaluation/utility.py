"""Utility metrics of a trained shift model (SELECT section "Utility metrics"), composed from
selectbench.metrics; every number here is computed from data at run time."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from selectbench.evaluation import quality as M
from selectbench.models.training import CL, PREDICT_BATCH, model_input, predict


# --- synthetic distribution shift (ImageNet-C analogue; the set itself: selectbench.corruptions) --
def corruption_metrics(logits: np.ndarray, labels: np.ndarray, cidx: np.ndarray, sev: np.ndarray,
                       names: list[str]) -> dict:
    correct = logits.argmax(1) == labels
    table = np.zeros((len(names), 5))
    for c in range(len(names)):
        for s in range(5):
            m = (cidx == c) & (sev == s + 1)
            table[c, s] = correct[m].mean() if m.any() else np.nan
    return {"mean_top1": float(np.nanmean(table)),
            "per_corruption": {n: float(np.nanmean(table[i])) for i, n in enumerate(names)},
            "error_table": (1 - table).tolist()}


# --- natural distribution shift ------------------------------------------------------------------
def natural_predictions(logits: np.ndarray, labels: np.ndarray, sets: np.ndarray | None,
                        scored: dict[str, list[int]] | None = None) -> np.ndarray:
    """argmax per image; for an image of a set in `scored` (ImageNet-R / -A: the published protocol
    scores only their 200 classes, data/natural/scored_classes.json), over those classes only."""
    pred = logits.argmax(1) if len(logits) else np.empty(0, dtype=np.int64)
    if sets is None or not scored:
        return pred
    for name, classes in scored.items():
        m = sets == name
        if not m.any():
            continue
        allowed = np.asarray(sorted(classes), dtype=np.int64)
        outside = sorted(set(np.unique(labels[m]).tolist()) - set(allowed.tolist()))
        if outside:
            raise ValueError(f"{name}: labels {outside[:5]} are not among its scored classes")
        pred[m] = allowed[logits[np.ix_(m, allowed)].argmax(1)]
    return pred


# --- transfer (VTAB-inspired) ----------------------------------------------------------------
PROTOCOLS = ("finetune", "linear")


def finetune(model: torch.nn.Module, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
             test_y: np.ndarray, num_classes: int, cfg: dict, train_cfg: dict, seed: int) -> np.ndarray:
    """SELECT's protocol (`cfg["protocol"]` "finetune"): new head, whole network fine-tuned with
    SGD, fixed steps, step decay; "linear": the same recipe on a new head over the frozen network's
    pooled features. Returns the per-test-item correctness (bool [N]).

    Task images may be grey [N,H,W] or RGB [N,H,W,3]; they are converted to the model's channels."""
    protocol = cfg.get("protocol", "finetune")
    if protocol not in PROTOCOLS:
        raise ValueError(f"transfer.protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    torch.manual_seed(seed)
    dev = next(model.parameters()).device
    # No antialias, unlike predict: turning it on would change the recorded transfer numbers.
    x_all = model_input(train_x, train_cfg["img_size"], train_cfg.get("in_chans", 1), antialias=False)
    y_all = torch.as_tensor(train_y, dtype=torch.long)
    if protocol == "linear":
        # The frozen network sees no augmentation, so its features are computed once: the same
        # numbers as running it inside every step, at a fraction of the cost.
        body = copy.deepcopy(model).to(dev, memory_format=CL).eval()
        x_all = _features(body, x_all)
        m = torch.nn.Linear(x_all.shape[1], num_classes).to(dev)
    else:
        m = copy.deepcopy(model)
        m.reset_classifier(num_classes)
        m.to(dev, memory_format=CL).train()
    opt = torch.optim.SGD(m.parameters(), lr=cfg["lr"], momentum=0.9, weight_decay=0.0)
    steps = cfg["steps"]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[int(steps * 0.5), int(steps * 0.75)], gamma=0.1)
    gen = torch.Generator().manual_seed(seed)
    fmt = {} if protocol == "linear" else {"memory_format": CL}
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (cfg["batch_size"],), generator=gen)
        loss = F.cross_entropy(m(x_all[idx].to(dev, **fmt)), y_all[idx].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    m.eval()
    if protocol == "linear":
        x_test = model_input(test_x, train_cfg["img_size"], train_cfg.get("in_chans", 1), antialias=True)
        with torch.no_grad():
            return m(_features(body, x_test).to(dev)).argmax(1).cpu().numpy() == test_y
    return predict(m, test_x, train_cfg).argmax(1) == test_y


@torch.no_grad()
def _features(body: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's pooled features (timm's pre-logits) of normalised inputs, batch by batch."""
    dev = next(body.parameters()).device
    out = [body.forward_head(body.forward_features(x[i:i + PREDICT_BATCH].to(dev, memory_format=CL)), pre_logits=True)
           for i in range(0, len(x), PREDICT_BATCH)]
    return torch.cat(out).float().cpu() if out else torch.empty(0, 0)


# --- self-supervised guidance ------------------------------------------------------------------
def ssl_guidance(shift_emb: np.ndarray, shift_labels: np.ndarray, test_emb: np.ndarray, test_labels: np.ndarray,
                 num_classes: int, shots: list[int], ks: list[int], seed: int,
                 temperature: float = 0.07) -> tuple[dict, dict]:
    """Weighted kNN on the test split with `shots` samples per class from the shift as the bank:
    (accuracies, per-test-item correctness), both keyed `<shot>shot_k<k>`.

    Short classes contribute all the samples they have; empty classes contribute none, so their
    test images can only be predicted as other classes (they count as errors, not skipped)."""
    rng = np.random.default_rng(seed)
    out, items = {}, {}
    for shot in shots:
        bank_rows = []
        for c in range(num_classes):
            members = np.flatnonzero(shift_labels == c)
            bank_rows.append(rng.choice(members, size=min(shot, len(members)), replace=False))
        rows = np.concatenate(bank_rows).astype(np.int64)
        for k in ks:
            if not len(rows):
                out[f"{shot}shot_k{k}"] = float("nan")
                continue
            probs = M.knn_classify(shift_emb[rows], shift_labels[rows], test_emb, num_classes, k=k, temperature=temperature)
            items[f"{shot}shot_k{k}"] = probs.argmax(1) == test_labels
            out[f"{shot}shot_k{k}"] = float(items[f"{shot}shot_k{k}"].mean())
        out[f"{shot}shot_bank"] = int(len(rows))
    return out, items


# --- image quality ------------------------------------------------------------------------------
def quality(shift_emb: np.ndarray, ref_emb: np.ndarray, probs: np.ndarray, seed: int) -> dict:
    """The Inception Score analogue (`probs`: a base-task classifier's probabilities) and CMMD of
    a sample of a shift's images against base train images, both in a judge's space.

    CMMD here: the unbiased MMD^2 (x1000, as CMMD reports it) with the RBF bandwidth set by the
    median heuristic on the reference sample - one rule for every shift, from base data only - and
    beside it `cmmd_floor`, the same statistic between a second, disjoint base sample of the
    shift sample's size and the reference: what two samples of one distribution already score.
    `ref_emb`: base embeddings; its first half is the reference, the rest the floor's."""
    nan = float("nan")
    if len(shift_emb) == 0:
        return {"inception_score": nan, "cmmd": nan, "cmmd_floor": nan, "cmmd_sigma": nan}
    half = len(ref_emb) // 2
    ref, other = ref_emb[:half], ref_emb[half:half + len(shift_emb)]
    sigma = M.median_bandwidth(ref, seed=seed)
    ok = np.isfinite(sigma) and sigma > 0
    is_mean, _ = M.inception_score(probs)
    return {"inception_score": float(is_mean),
            "cmmd": M.mmd_rbf(shift_emb, ref, sigma=sigma, unbiased=True) if ok else nan,
            "cmmd_floor": M.mmd_rbf(other, ref, sigma=sigma, unbiased=True) if ok else nan,
            "cmmd_sigma": sigma}
