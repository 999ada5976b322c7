"""Every per-shift utility metric of one trained shift (the evaluate stage's library).

Cross-shift numbers (mCE relative to `in`, Spearman agreement with `in`) are computed by the
report stage, so evaluating one shift never depends on another shift's model."""
from __future__ import annotations

import numpy as np

from selectbench.core import layout
from selectbench.core.classes import load as load_classes
from selectbench.core.images import open_images
from selectbench.core.index import gather, read_index
from selectbench.core.io import read_json
from selectbench.core.layout import load_split
from selectbench.core.params import get
from selectbench.curation import context
from selectbench.evaluation import accuracy, noise
from selectbench.evaluation import utility as E
from selectbench.models.training import load_model, predict


def shift_embeddings(shift: str, index) -> np.ndarray:
    """Embeddings of a shift's training items (generated images are embedded here)."""
    gen = layout.curated(shift) / "images.npy"
    images = np.load(gen, mmap_mode="r") if gen.exists() else None
    return context.embeddings_of(context.Context({}), context.Curated(index, images))


def save_samples(shift: str, index, seed: int, n: int = 8) -> None:
    """A few curated items (image, label, caption) for the report's example grid."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(index), size=min(n, len(index)), replace=False)) if len(index) else np.empty(0, int)
    sub = index.iloc[take]
    arrays = context.image_arrays(sub, layout.curated(shift))
    imgs = gather(sub, {s: (lambda r, a=a: np.asarray(a[r])) for s, a in arrays.items()}, "samples")
    captions = [""] * len(take)
    if (sub["source"] == "pool").any():
        import pandas as pd

        cap = pd.read_parquet(layout.POOL_META, columns=["caption"])["caption"].to_numpy()
        captions = [cap[r] if s == "pool" else "" for s, r in zip(sub["source"], sub["row"])]
    layout.SAMPLES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(layout.samples(shift), images=np.zeros((0, 28, 28), np.uint8) if imgs is None else imgs,
                        labels=sub["label"].to_numpy(), captions=np.array(captions, dtype=str))


def evaluate_shift(p: dict, shift: str) -> dict:
    """The metrics record of `shift` (reports/metrics/<shift>.json)."""
    seed = get(p, "evaluate.seed", int)
    stats = read_json(layout.curated(shift) / "stats.json")
    index = read_index(layout.curated(shift) / "index.parquet")
    classes = list(load_classes().entries)
    C = len(classes)
    out = {"shift": shift, "images": stats["images"], "coverage": stats["coverage"], "dataset": stats}
    model, args_yaml = load_model(layout.model(shift))
    save_samples(shift, index, seed)
    # Dataset-side metrics need no model, so they are reported even for a skipped shift.
    shift_emb = shift_embeddings(shift, index)
    labels = index["label"].to_numpy()
    emb_test = np.load(layout.embedding("test_img")).astype(np.float32)
    test = load_split(layout.TEST_SPLIT)
    train = load_split(layout.TRAIN_SPLIT)
    out["ssl_knn"] = E.ssl_guidance(shift_emb, labels, emb_test, test["labels"], C, get(p, "evaluate.ssl_shots", list),
                                    get(p, "evaluate.ssl_k", list), seed)
    base = np.flatnonzero(train["part"] == 0)
    ref_emb = np.load(layout.embedding("train_img"), mmap_mode="r")[base].astype(np.float32)
    from selectbench.models import embedder as EMB

    prompts = EMB.load(layout.EMBEDDER).encode_texts([f"a photo of a {c['name']}" for c in classes])
    out["quality"] = E.quality(shift_emb, labels, ref_emb, train["labels"][base], prompts, C,
                               get(p, "evaluate.quality_items", int, lo=2), seed)
    noise_n = min(len(labels), get(p, "evaluate.noise_items", int, lo=0))
    if noise_n >= 20 and len(np.unique(labels)) > 1:
        rows = np.sort(np.random.default_rng(seed).choice(len(labels), size=noise_n, replace=False))
        rate, per_class = noise.estimate_label_noise(shift_emb[rows], labels[rows], C, folds=5, seed=seed)
        out["label_noise"] = {"estimated": float(rate), "per_class_estimated": [float(v) for v in per_class]}
    else:
        out["label_noise"] = {"estimated": float("nan")}
    if "label_precision" in stats:
        out["label_noise"]["exact"] = 1.0 - stats["label_precision"]
        out["label_noise"]["per_class_exact"] = [None if v is None else 1.0 - v for v in stats["label_precision_per_class"]]
    if model is None:
        out["status"] = f"not trained: {args_yaml.get('skipped', 'no model')}"
    else:
        cfg = args_yaml["train"]
        logits = predict(model, open_images("test"), cfg)
        pred = logits.argmax(1)
        out["status"] = "ok"
        out["top1"] = accuracy.topk_accuracy(logits, test["labels"], 1)
        out["top5"] = accuracy.topk_accuracy(logits, test["labels"], 5)
        out["per_class_accuracy"] = accuracy.per_class_accuracy(pred, test["labels"], C).tolist()
        cor = np.load(layout.CORRUPTED / "corrupted.npz")
        names = read_json(layout.CORRUPTED / "summary.json")["corruptions"]
        out["corruption"] = E.corruption_metrics(predict(model, cor["images"], cfg), cor["labels"],
                                                 cor["corruption"], cor["severity"], names)
        nat = open_images("natural")
        import pandas as pd

        nat_meta = pd.read_parquet(layout.NATURAL_META)
        nat_labels = nat_meta["label"].to_numpy()
        sets = nat_meta["set"].to_numpy() if "set" in nat_meta else None
        scored_file = layout.NATURAL / "scored_classes.json"
        scored = read_json(scored_file) if scored_file.exists() else {}
        nat_pred = E.natural_predictions(predict(model, nat, cfg), nat_labels, sets, scored)
        out["natural"] = {"top1": float((nat_pred == nat_labels).mean()) if len(nat) else float("nan"),
                          "images": int(len(nat)), "correct": int((nat_pred == nat_labels).sum())}
        if sets is not None:  # full profile: ImageNet-V2 / -R / -A / -Sketch each on its own too
            out["natural"]["per_set"] = {s: float((nat_pred[sets == s] == nat_labels[sets == s]).mean())
                                         for s in sorted(set(sets))}
            # Which classes each restricted set was scored over (its published ones the run has).
            out["natural"]["scored_classes"] = {s: c for s, c in scored.items() if (sets == s).any()}
        tcfg = get(p, "transfer", dict)
        accs, ns, per_task = [], [], {}
        for task in tcfg["tasks"]:
            d = np.load(layout.task(task))
            acc = E.finetune(model, d["train_x"], d["train_y"], d["test_x"], d["test_y"],
                             int(d["train_y"].max()) + 1, tcfg, cfg, seed)
            lo, hi = accuracy.binomial_ci(round(acc * len(d["test_y"])), len(d["test_y"]))
            per_task[task] = {"top1": acc, "ci95": [float(lo), float(hi)], "n": int(len(d["test_y"]))}
            accs.append(acc)
            ns.append(len(d["test_y"]))
        mean, lo, hi = accuracy.mean_accuracy_ci(accs, ns)
        out["transfer"] = {"mean": float(mean), "ci95": [float(lo), float(hi)], "tasks": per_task}
    return out
