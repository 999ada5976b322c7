"""train_judge_encoder: the self-supervised judge encoder (SimCLR on base train images, embedded
default) or a pointer to published weights (full profile) -> models/judge/encoder, with its
quality (test kNN top-1) in reports/metrics/judge_encoder.json. Curation never reads it."""
import argparse
import time

import numpy as np

from selectbench.core import layout
from selectbench.core.images import open_images
from selectbench.core.io import write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, stage_main
from selectbench.evaluation.quality import knn_classify
from selectbench.models import judge


def knn_quality(model, cfg: dict, images: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> dict:
    """Test top-1 of a k = 20 kNN over `per_class` seeded base images per class: how much class
    information the encoder's space holds (it never saw a label)."""
    rng = np.random.default_rng(seed)
    bank = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())),
                                              replace=False) for c in np.unique(labels)]))
    test = layout.load_split(layout.TEST_SPLIT)
    probs = knn_classify(judge.features(model, images[bank], cfg), labels[bank],
                         judge.features(model, open_images("test"), cfg), int(labels.max()) + 1, k=20)
    return {"knn_top1": float((probs.argmax(1) == test["labels"]).mean()), "bank": int(len(bank)), "k": 20}


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.train_judge_encoder")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    limit_threads(all_threads())
    p = load_params(args.params)
    t0 = time.perf_counter()
    model, cfg, images, labels = judge.prepare(p, "encoder", layout.judge("encoder"))
    q = knn_quality(model, cfg, images, labels, get(p, "judge.quality_per_class", int, lo=1), get(p, "judge.seed", int))
    write_json(layout.judge_quality("encoder"), {"role": "encoder", "kind": cfg["kind"], "model": cfg["model"], **q})
    write_json(layout.cost("train_judge_encoder"), {"wall_s": round(time.perf_counter() - t0, 2)})
    print(f"train_judge_encoder: {cfg['model']} ({cfg['kind']}), test kNN top-1 {q['knn_top1']:.3f} "
          f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
