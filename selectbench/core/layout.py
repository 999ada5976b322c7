"""Every path of the stage contract, relative to the project root (where DVC runs each stage).

A stage writes and reads its inputs and outputs only through these names, so the contract between
stages is written in one place (dvc.yaml lists the same paths)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[2]  # the checkout, for code that runs outside a stage (tests)

META = Path("data/meta")              # checked-in facts: classes.yaml, crowd vocabulary, mappings
CLASSES = META / "classes.yaml"
PARAMS_OK = Path("data/params.ok")
CODE = Path("data/code")              # <stage>.txt: md5 and path of each file the stage's code imports (stages.code)
MANIFESTS = Path("data/manifests")   # <group>.json: what external data each reading stage saw (stages.manifests)
MANIFEST_HASHES = Path("data/tmp/manifest_hashes.json")  # metadata-file hashes by stat, so unchanged files are not reread


def code(stage: str) -> Path:
    """The fingerprint of the code `python -m stages.<stage>` runs: what the stage depends on for it."""
    return CODE / f"{stage}.txt"


def manifest(group: str) -> Path:
    """`imagenet` (read by download), `pool` (LAION, OpenImages, ImageNet variants: pool), `vtab` (tasks)."""
    return MANIFESTS / f"{group}.json"

RAW = Path("data/raw")                # {train,test}.npz (+ <split>.images.json in the full profile)
TRAIN_SPLIT, TEST_SPLIT = RAW / "train.npz", RAW / "test.npz"
POOL = Path("data/pool")              # images.npy | images.json, meta.parquet, crowd_labels.csv, stats.json
POOL_META = POOL / "meta.parquet"
NATURAL = Path("data/natural")        # images.npy | images.json, meta.parquet, scored_classes.json
NATURAL_META = NATURAL / "meta.parquet"
EMBEDDINGS = Path("data/embeddings")  # <kind>.npy + <kind>.ids.parquet
CORRUPTED = Path("data/corrupted")    # corrupted.npz, summary.json
TASKS = Path("data/tasks")            # <task>.npz, summary.json
TMP = Path("data/tmp")                # resumable scratch, never an output
EMBEDDER = Path("models/embedder")
GENERATOR = Path("models/generator")
JUDGE = Path("models/judge")          # <role>/: model.safetensors + config.json (encoder, classifier)
METRICS, COSTS, SAMPLES = Path("reports/metrics"), Path("reports/cost"), Path("reports/samples")
ITEMS = Path("reports/items")

# image set -> (array file, pointer file): arrays in the embedded profile, pointers in the full one
IMAGE_SETS = {
    "train": (RAW / "train.npz", RAW / "train.images.json"),
    "test": (RAW / "test.npz", RAW / "test.images.json"),
    "pool": (POOL / "images.npy", POOL / "images.json"),
    "natural": (NATURAL / "images.npy", NATURAL / "images.json"),
}


def embedding(kind: str) -> Path:
    """float16 [N, D] of `train_img`, `test_img`, `pool_img`, `pool_txt`, `class_txt`."""
    return EMBEDDINGS / f"{kind}.npy"


def embedding_ids(kind: str) -> Path:
    """The `sample_id` of each row of embedding(kind), in its order."""
    return EMBEDDINGS / f"{kind}.ids.parquet"


def judge(role: str) -> Path:
    """A judge model (`encoder`, `classifier`): scores shifts, never curates them."""
    return JUDGE / role


def judge_quality(role: str) -> Path:
    return METRICS / f"judge_{role}.json"


def task(name: str) -> Path:
    return TASKS / f"{name}.npz"


def curated(shift: str) -> Path:
    """index.parquet, stats.json[, generated/] of one shift."""
    return Path("data/curated") / shift


def generated(curated_dir: str | Path) -> Path:
    """A generated shift's images: WebDataset shards gen-*.tar + sizes.json (selectbench.core.genshards)."""
    return Path(curated_dir) / "generated"


AUDIT = Path("data/audit")              # <shift>.parquet (flagged items), summary.json (stages.audit)
AUDIT_SUMMARY = AUDIT / "summary.json"


def audit(shift: str) -> Path:
    """The items of a shift that near-copy an evaluation image (one row per item and set)."""
    return AUDIT / f"{shift}.parquet"


def shards(shift: str) -> Path:
    """shard-*.tar, sizes.json, summary.json of one shift."""
    return Path("data/shards") / shift


def run(shift: str, rep: str) -> str:
    """One replicate of one shift, named as its DVC stages are (`train@<shift>-<rep>`)."""
    return f"{shift}-{rep}"


def model(shift: str, rep: str) -> Path:
    """model.safetensors + args.yaml (the resolved training config) of one replicate of a shift."""
    return Path("models") / shift / rep


def checkpoints(name: str) -> Path:
    return Path("checkpoints") / name


def metrics(shift: str, rep: str) -> Path:
    """The model-side metrics of one replicate (evaluate@<shift>-<rep>)."""
    return METRICS / shift / f"{rep}.json"


def described(shift: str) -> Path:
    """The dataset-side metrics of a shift, no model involved (describe@<shift>)."""
    return METRICS / shift / "data.json"


def items(shift: str, name: str) -> Path:
    """Per-test-item scores behind the metrics of replicate `name` (or `ssl`, describe's bank draws):
    what paired comparisons and test-set intervals are computed from."""
    return ITEMS / shift / f"{name}.npz"


def random_init(rep: str) -> tuple[Path, Path]:
    """(metrics record, item scores) of the transfer baseline of one replicate: the network shifts
    train, from that replicate's initialisation without any training (stage transfer_baseline)."""
    return Path("reports/baseline") / f"{rep}.json", Path("reports/baseline") / f"{rep}.npz"


def samples(shift: str) -> Path:
    return SAMPLES / f"{shift}.npz"


def cost(record: str) -> Path:
    """Wall-clock records (`curate_<shift>`, `train_embedder`, ...), kept apart from hashed outputs."""
    return COSTS / f"{record}.json"


def live(record: str) -> Path:
    return Path("reports/live") / record


RESULTS = Path("reports/results")
SUMMARY = Path("reports/summary.json")


def load_split(path: str | Path) -> dict[str, np.ndarray]:
    """A data/raw/<split>.npz: labels, part (train) and, in the embedded profile, images."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
