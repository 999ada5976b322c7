"""train_judge_classifier: the supervised base-task classifier that scores the Inception Score
analogue (trained on base train images in the embedded default, published weights in the full
profile) -> models/judge/classifier, with its test top-1 in reports/metrics/judge_classifier.json.
Curation never reads it."""
import argparse
import time

from selectbench.core import layout
from selectbench.core.images import open_images
from selectbench.core.io import write_json
from selectbench.core.params import load_params
from selectbench.core.runtime import all_threads, limit_threads, stage_main
from selectbench.models import judge


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.train_judge_classifier")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    limit_threads(all_threads())
    p = load_params(args.params)
    t0 = time.perf_counter()
    model, cfg, _, labels = judge.prepare(p, "classifier", layout.judge("classifier"))
    classes = int(labels.max()) + 1
    logits = judge.features(model, open_images("test"), cfg)
    test = layout.load_split(layout.TEST_SPLIT)
    # A published head's classes need not be the base task's: then there is no top-1 to report.
    top1 = float((logits.argmax(1) == test["labels"]).mean()) if logits.shape[1] == classes else None
    write_json(layout.judge_quality("classifier"), {"role": "classifier", "kind": cfg["kind"], "model": cfg["model"],
                                                    "test_top1": top1, "outputs": int(logits.shape[1])})
    write_json(layout.cost("train_judge_classifier"), {"wall_s": round(time.perf_counter() - t0, 2)})
    shown = "n/a (its own classes)" if top1 is None else f"{top1:.3f}"
    print(f"train_judge_classifier: {cfg['model']} ({cfg['kind']}), test top-1 {shown} ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
