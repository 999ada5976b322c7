"""The clustering paper's claim (Vo et al. 2024): self-supervised features pretrained on a pool
subset drawn by hierarchical k-means beat those pretrained on a uniform random subset of the same
size and on the raw pool, overall and on the long tail. The rule (docs/simulation.md section 15)
was fixed before this bench first ran.

Usage (after `dvc repro`, inside the venv): python -m bench.ssl_curation [--replicates r1 r2 r3]
Prints the four verdicts and writes bench/out/ssl_curation.json.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from selectbench.core.images import open_images, take
from selectbench.core.layout import TEST_SPLIT, load_split
from selectbench.core.params import Section, get, load_params
from selectbench.core.runtime import all_threads, limit_threads, replicate_seed
from selectbench.curation.context import Context
from selectbench.curation.search import hkm_draw
from selectbench.evaluation import stats
from selectbench.evaluation.quality import knn_classify
from selectbench.models import judge

TAIL_CLASSES = 5


def subsets(ctx: Context, p: dict) -> dict[str, np.ndarray]:
    """Pool rows of each pretraining set: hkm (the `hkm` shift's tree, no prefilter), random, raw."""
    web = ctx.web_rows
    n = get(p, "shifts.hkm.n", int, lo=1)
    hkm = np.sort(web[hkm_draw(Section(p, "shifts.hkm"), ctx.emb("pool_img")[web], n)])
    rnd = np.sort(np.random.default_rng(0).choice(web, size=n, replace=False))
    return {"hkm": hkm, "random": rnd, "raw": web}


def knn_items(model, cfg: dict, bank_x, bank_y, test_x, test_y, k: int = 20) -> np.ndarray:
    """Per test item, whether the weighted kNN over the bank gets it right (bool [N])."""
    probs = knn_classify(judge.features(model, bank_x, cfg), bank_y, judge.features(model, test_x, cfg),
                         int(bank_y.max()) + 1, k=k)
    return probs.argmax(1) == test_y


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.ssl_curation")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--replicates", nargs="+", default=None)
    ap.add_argument("--out", default="bench/out/ssl_curation.json")
    args = ap.parse_args(argv)
    limit_threads(all_threads())
    p = load_params(args.params)
    reps = args.replicates or get(p, "replicates", list)
    ctx = Context(p)
    pool = open_images("pool")
    sets = subsets(ctx, p)
    truth = ctx.pool_meta["true_label"].to_numpy()
    counts = np.bincount(truth[ctx.web_rows][truth[ctx.web_rows] >= 0], minlength=ctx.num_classes)
    tail = np.sort(np.argsort(counts, kind="stable")[:TAIL_CLASSES])
    base_x, base_y = judge.base_set()
    rng = np.random.default_rng(get(p, "judge.seed", int))
    per_class = get(p, "judge.quality_per_class", int, lo=1)
    bank = np.sort(np.concatenate([rng.choice(np.flatnonzero(base_y == c), size=min(per_class, int((base_y == c).sum())),
                                              replace=False) for c in range(ctx.num_classes)]))
    test = load_split(TEST_SPLIT)
    test_x, test_y = open_images("test"), test["labels"]
    in_tail = np.isin(test_y, tail)
    enc = judge.settings(p, "encoder", 1 if base_x.ndim == 3 else 3, ctx.num_classes)
    items = {s: [] for s in sets}
    t0 = time.perf_counter()
    for rep in reps:
        cfg = {**enc["params"], "seed": replicate_seed(enc["params"]["seed"], rep)}
        for name, rows in sets.items():
            images, _ = take(pool, rows)
            model = judge.train_encoder(images, cfg).eval()
            ok = knn_items(model, enc, base_x[bank], base_y[bank], test_x, test_y)
            items[name].append(ok)
            print(f"{rep} {name} ({len(rows)} images): kNN top-1 {ok.mean():.4f}, tail {ok[in_tail].mean():.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    margin = get(p, "report.decision.margin", float, lo=0.0)
    conf = get(p, "report.decision.confidence", float, lo=0.5, hi=0.999)
    out = {"sets": {s: int(len(r)) for s, r in sets.items()}, "tail_classes": [ctx.classes.names[c] for c in tail],
           "pool_counts": counts.tolist(), "replicates": reps, "top1": {}, "verdicts": []}
    for name in sets:
        a = np.stack(items[name]).astype(float)
        out["top1"][name] = {"all": a.mean(1).tolist(), "tail": a[:, in_tail].mean(1).tolist()}
    for other in ("random", "raw"):
        for scope, mask in (("all classes", slice(None)), ("tail classes", in_tail)):
            a, b = np.stack(items["hkm"])[:, mask], np.stack(items[other])[:, mask]
            iv = stats.paired(a, b, None, conf)
            v, _ = stats.verdict(iv, margin)
            claim = f"hkm beats {other} ({scope})"
            out["verdicts"].append({"claim": claim, "verdict": v, "effect": iv.mean, "interval": [iv.lo, iv.hi]})
            print(f"{claim}: {v}, {iv.mean:+.4f} [{iv.lo:+.4f}, {iv.hi:+.4f}]")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
