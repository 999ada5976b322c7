"""Simulated crowd labels in OpenImages' format: machine candidates, a verified share, annotator error."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from selectbench.embedded.meta import Vocab

CROWD_VERIFIED_SOURCE = "crowdsource-verification"
CROWD_MACHINE_SOURCE = "machine"


def simulate_crowd(
    image_ids: Sequence[str],
    concepts: Sequence[str],
    vocab: Vocab,
    sibling_concepts: dict[str, list[str]],
    ccfg: dict,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Machine-proposed candidate labels, a share of them verified by (fallible) humans."""
    n_labels = len(vocab.labels)
    by_concept: dict[str, dict] = {}

    def plan(concept: str) -> dict:
        if concept not in by_concept:
            applies = [j for j in range(n_labels) if concept in vocab.applies[j]]
            app = set(applies)
            confusable = sorted(
                {j for s in sibling_concepts.get(concept, []) for j in range(n_labels) if s in vocab.applies[j]} - app
            )
            by_concept[concept] = {
                "fine": [j for j in applies if vocab.level[j] == "fine"],
                "coarse": [j for j in applies if vocab.level[j] == "coarse"],
                "generic": [j for j in applies if vocab.level[j] == "generic"],
                "applies": app,
                "confusable": confusable,
                "other": [j for j in range(n_labels) if j not in app],
            }
        return by_concept[concept]

    rows_img, rows_src, rows_lab, rows_conf = [], [], [], []
    for img, concept in zip(image_ids, concepts):
        if rng.random() >= ccfg["coverage"]:
            continue
        pl = plan(concept)
        cands: list[int] = []
        fine, coarse = pl["fine"], pl["coarse"]
        if fine and coarse:
            cands.append(int(rng.choice(fine if rng.random() < ccfg["fine_share"] else coarse)))
        elif fine or coarse:
            cands.append(int(rng.choice(fine or coarse)))
        for j in pl["generic"]:
            if rng.random() < ccfg["generic_rate"]:
                cands.append(j)
        for _ in range(int(rng.poisson(ccfg["distractors_mean"]))):
            pool = pl["confusable"] if pl["confusable"] and rng.random() < ccfg["confusable_share"] else pl["other"]
            j = int(rng.choice(pool))
            if j not in cands:
                cands.append(j)
        for j in cands:
            truth = j in pl["applies"]
            if rng.random() < ccfg["verification_rate"]:
                answer = truth != (rng.random() < ccfg["annotator_error_rate"])
                src, conf = CROWD_VERIFIED_SOURCE, "1" if answer else "0"
            else:
                # Machine scores stay below 1 so that Confidence == 1 always means a human said yes.
                score = rng.uniform(0.5, 1.0) if truth else rng.uniform(0.1, 0.7)
                src, conf = CROWD_MACHINE_SOURCE, f"{math.floor(score * 10) / 10:.1f}"
            rows_img.append(img)
            rows_src.append(src)
            rows_lab.append(vocab.labels[j])
            rows_conf.append(conf)
    return pd.DataFrame({"ImageID": rows_img, "Source": rows_src, "LabelName": rows_lab, "Confidence": rows_conf})


def crowd_summary(crowd: pd.DataFrame, mapping: dict[str, int], true_label: dict[str, int], names: list[str]) -> dict:
    verified = crowd[crowd["Source"] == CROWD_VERIFIED_SOURCE]
    pos = verified[verified["Confidence"] == "1"]
    mapped = pos[pos["LabelName"].isin(list(mapping))]
    cls = mapped["LabelName"].map(mapping).astype(np.int64).to_numpy()
    truth = mapped["ImageID"].map(true_label).astype(np.int64).to_numpy()
    per_class = np.bincount(cls, minlength=len(names)) if len(cls) else np.zeros(len(names), np.int64)
    correct = np.bincount(cls[cls == truth], minlength=len(names)) if len(cls) else np.zeros(len(names), np.int64)
    nz = per_class[per_class > 0]
    return {
        "rows": len(crowd),
        "rows_by_source": {k: int(v) for k, v in sorted(crowd["Source"].value_counts().items())},
        "images_with_any_label": int(crowd["ImageID"].nunique()),
        "verified_positive": len(pos),
        "verified_negative": int(len(verified) - len(pos)),
        "verified_positive_share": round(len(pos) / len(verified), 4) if len(verified) else None,
        "mapped_verified_positive_per_class": {names[c]: int(per_class[c]) for c in range(len(names))},
        "mapped_label_precision_per_class": {
            names[c]: (round(float(correct[c] / per_class[c]), 4) if per_class[c] else None) for c in range(len(names))
        },
        "empty_classes": [names[c] for c in range(len(names)) if per_class[c] == 0],
        "max_over_median_nonempty": round(float(nz.max() / np.median(nz)), 3) if nz.size else None,
    }
