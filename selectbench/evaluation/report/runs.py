"""What the report reads: each shift's dataset-side record, its replicates' metrics records and the
per-test-item scores behind them, and the cost records; and each utility metric as a matrix of item
scores [replicates, items] from which intervals and paired comparisons are computed."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selectbench.core import layout

# metric -> (label, higher is better); the item-score key of each is its name (ssl: describe's bank draws)
UTILITY = {"top1": ("base top-1", True), "corruption": ("synthetic shift", True), "natural": ("natural shift", True),
           "transfer": ("transfer mean", True), "ssl": ("SSL kNN (10-shot, k=20)", True)}
SSL_KEY = "10shot_k20"


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@dataclass
class Shift:
    name: str
    data: dict | None                                    # describe@<shift>
    evals: dict[str, dict | None] = field(default_factory=dict)        # rep -> evaluate@<shift>-<rep>
    items: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # rep -> item scores
    costs: dict[str, dict] = field(default_factory=dict)               # record -> cost json

    @property
    def trained(self) -> list[str]:
        """Replicates with a trained, evaluated model."""
        return [r for r, m in self.evals.items() if m is not None and m.get("status") == "ok"]

    @property
    def status(self) -> str:
        if self.data is None and not any(self.evals.values()):
            return "missing"
        bad = {r: ("no metrics" if m is None else m.get("status")) for r, m in self.evals.items()
               if m is None or m.get("status") != "ok"}
        return "ok" if not bad else "; ".join(f"{r}: {s}" for r, s in bad.items())

    @property
    def control(self) -> bool:
        """A negative control (labels shuffled, shifts.<name>.shuffle_labels): never a rival, never ranked."""
        return bool(((self.data or {}).get("dataset") or {}).get("labels_shuffled", False))

    def scores(self, metric: str, reps: list[str] | None = None) -> tuple[np.ndarray, np.ndarray | None] | None:
        """([R, N] item scores over `reps` (default: the trained replicates), strata [N] or None), or None."""
        reps = self.trained if reps is None else reps
        if not reps:
            return None
        rows, strata = [], None
        for r in reps:
            it = self.items.get(r, {})
            if metric not in it:
                return None
            rows.append(it[metric].astype(np.float64))
            strata = it.get(f"{metric}_strata")
        if len({len(x) for x in rows}) != 1:
            raise ValueError(f"{self.name}: replicates scored {metric} on different numbers of items")
        return np.stack(rows), strata

    def per_rep(self, fn) -> dict[str, float]:
        """fn(metrics record of a replicate) for each trained replicate."""
        return {r: float(fn(self.evals[r])) for r in self.trained}


UPSTREAM_STAGES = ("train_embedder", "embed", "train_generator")


def upstream_costs() -> dict[str, dict]:
    """The cost records of the stages shifts share (models, embeddings), where they exist."""
    return {st: c for st in UPSTREAM_STAGES if (c := _json(layout.cost(st))) is not None}


def random_init(reps: list[str]) -> Shift | None:
    """The transfer baseline (stage transfer_baseline): the untrained network, scored like a shift
    on transfer only; None when no replicate of it ran."""
    sh = Shift("random init", None)
    for r in reps:
        record, scores = layout.random_init(r)
        sh.evals[r] = _json(record)
        sh.items[r] = _npz(scores)
    return sh if sh.trained else None


def load(shifts: list[str], reps: list[str]) -> dict[str, Shift]:
    out = {}
    for s in shifts:
        sh = Shift(s, _json(layout.described(s)))
        ssl = _npz(layout.items(s, "ssl"))
        for r in reps:
            sh.evals[r] = _json(layout.metrics(s, r))
            sh.items[r] = _npz(layout.items(s, r))
            if f"{r}/{SSL_KEY}" in ssl:
                sh.items[r]["ssl"] = ssl[f"{r}/{SSL_KEY}"]
            for stage in ("train", "evaluate"):
                c = _json(layout.cost(f"{stage}_{layout.run(s, r)}"))
                if c is not None:
                    sh.costs[f"{stage}_{r}"] = c
        for stage in ("curate", "describe"):
            c = _json(layout.cost(f"{stage}_{s}"))
            if c is not None:
                sh.costs[stage] = c
        out[s] = sh
    return out
