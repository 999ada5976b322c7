"""The model-side utility metrics of one replicate of a shift (the evaluate stage's library).

Cross-shift numbers (mCE relative to `in`, Spearman agreement with `in`) are computed by the
report stage, so evaluating one shift never depends on another shift's model."""
from __future__ import annotations

import os

import numpy as np

from selectbench.core import layout
from selectbench.core.classes import load as load_classes
from selectbench.core.comm import LOCAL, Local, map_rows
from selectbench.core.images import open_images
from selectbench.core.io import read_json
from selectbench.core.layout import load_split
from selectbench.core.params import get
from selectbench.core.runtime import compute_device, replicate_seed
from selectbench.evaluation import accuracy
from selectbench.evaluation import utility as E
from selectbench.models.training import PREDICT_BATCH, load_model, predict


def evaluate_run(p: dict, shift: str, rep: str, ranks: Local = LOCAL) -> tuple[dict, dict[str, np.ndarray]] | None:
    """(the record of reports/metrics/<shift>/<rep>.json, the per-item scores behind it for
    reports/items/<shift>/<rep>.npz: `<metric>` bool [N] and `<metric>_strata` int [N]; a
    metric is the mean over strata of each stratum's mean).

    Under torch.distributed every rank calls it with its `ranks` (selectbench.core.comm): each
    predicts its inference batches and fine-tunes its transfer tasks, rank 0 gets the result, the
    others None."""
    seed = replicate_seed(get(p, "evaluate.seed", int), rep)
    tcfg = transfer_config(p)
    classes = list(load_classes().entries)
    C = len(classes)
    out, items = {"shift": shift, "replicate": rep}, {}
    model, args_yaml = load_model(layout.model(shift, rep))
    test = load_split(layout.TEST_SPLIT)
    if model is None:
        out["status"] = f"not trained: {args_yaml.get('skipped', 'no model')}"
    else:
        if ranks.world > 1:  # each rank on its own GPU (load_model puts the model on the first)
            model.to(compute_device(int(os.environ.get("LOCAL_RANK", ranks.rank))))
        cfg = args_yaml["train"]
        cor = np.load(layout.CORRUPTED / "corrupted.npz")
        nat = open_images("natural")
        # Every rank takes part in each gather, in this order; only rank 0 goes on from here.
        logits = predict_batches(model, open_images("test"), cfg, ranks)
        cor_logits = predict_batches(model, cor["images"], cfg, ranks)
        nat_logits = predict_batches(model, nat, cfg, ranks)
        t_out = transfer(model, tcfg, cfg, seed, ranks)
        if ranks.rank != 0:
            return None
        pred = logits.argmax(1)
        items["top1"] = pred == test["labels"]
        items["p_true"] = accuracy.true_class_probability(logits, test["labels"])
        out["status"] = "ok"
        out["top1"] = accuracy.topk_accuracy(logits, test["labels"], 1)
        out["top5"] = accuracy.topk_accuracy(logits, test["labels"], 5)
        out["per_class_accuracy"] = accuracy.per_class_accuracy(pred, test["labels"], C).tolist()
        names = read_json(layout.CORRUPTED / "summary.json")["corruptions"]
        out["corruption"] = E.corruption_metrics(cor_logits, cor["labels"], cor["corruption"], cor["severity"], names)
        items["corruption"] = cor_logits.argmax(1) == cor["labels"]
        items["corruption_strata"] = cor["corruption"].astype(np.int64) * 10 + cor["severity"]
        import pandas as pd

        nat_meta = pd.read_parquet(layout.NATURAL_META)
        nat_labels = nat_meta["label"].to_numpy()
        sets = nat_meta["set"].to_numpy() if "set" in nat_meta else None
        scored_file = layout.NATURAL / "scored_classes.json"
        scored = read_json(scored_file) if scored_file.exists() else {}
        nat_pred = E.natural_predictions(nat_logits, nat_labels, sets, scored)
        if len(nat):
            items["natural"] = nat_pred == nat_labels
        out["natural"] = {"top1": float((nat_pred == nat_labels).mean()) if len(nat) else float("nan"),
                          "images": int(len(nat)), "correct": int((nat_pred == nat_labels).sum())}
        if sets is not None:  # full profile: ImageNet-V2 / -R / -A / -Sketch each on its own too
            out["natural"]["per_set"] = {s: float((nat_pred[sets == s] == nat_labels[sets == s]).mean())
                                         for s in sorted(set(sets))}
            # Which classes each restricted set was scored over (its published ones the run has).
            out["natural"]["scored_classes"] = {s: c for s, c in scored.items() if (sets == s).any()}
        out["transfer"], t_items = t_out
        items.update(t_items)
    return (out, items) if ranks.rank == 0 else None


def predict_batches(model, images, cfg: dict, ranks: Local = LOCAL, batch: int = PREDICT_BATCH) -> np.ndarray | None:
    """predict() with inference batch b on rank b % world: the logits in item order on rank 0 (the
    bytes one process gets: a batch holds the same items whatever the world size), None elsewhere."""
    return map_rows(lambda s, e: predict(model, images[s:e], cfg, batch), len(images), batch, ranks)


def transfer_config(p: dict) -> dict:
    """The `transfer` section with the keys the protocol reads checked (one-line errors)."""
    return {**get(p, "transfer", dict), "protocol": get(p, "transfer.protocol", str, choices=E.PROTOCOLS),
            "steps": get(p, "transfer.steps", int, lo=1), "batch_size": get(p, "transfer.batch_size", int, lo=1),
            "lr": get(p, "transfer.lr", (int, float), lo=0)}


def transfer(model, tcfg: dict, train_cfg: dict, seed: int,
             ranks: Local = LOCAL) -> tuple[dict, dict[str, np.ndarray]] | None:
    """SELECT's transfer protocol over the tasks of `tcfg`: (the metrics record, item scores
    `transfer` bool [N] and `transfer_strata` int [N], one stratum per task). Task i is fine-tuned
    on rank i % world (each task seeds itself, so it does not matter where); rank 0 gets the
    result, the others None."""
    tasks = tcfg["tasks"]
    part = {}
    for i in ranks.mine(len(tasks)):
        d = np.load(layout.task(tasks[i]))
        part[i] = E.finetune(model, d["train_x"], d["train_y"], d["test_x"], d["test_y"],
                             int(d["train_y"].max()) + 1, tcfg, train_cfg, seed)
    done = ranks.merge(part)
    if done is None:
        return None
    accs, ns, per_task, t_items, t_strata = [], [], {}, [], []
    for i, task in enumerate(tasks):
        correct = done[i]
        lo, hi = accuracy.binomial_ci(int(correct.sum()), len(correct))
        per_task[task] = {"top1": float(correct.mean()), "ci95": [float(lo), float(hi)], "n": int(len(correct))}
        accs.append(float(correct.mean()))
        ns.append(len(correct))
        t_items.append(correct)
        t_strata.append(np.full(len(correct), i))
    mean, lo, hi = accuracy.mean_accuracy_ci(accs, ns)
    items = {"transfer": np.concatenate(t_items), "transfer_strata": np.concatenate(t_strata)} if t_items else {}
    return {"mean": float(mean), "ci95": [float(lo), float(hi)], "tasks": per_task}, items
