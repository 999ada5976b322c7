"""A parameter sweep read back from `dvc exp show --json`: one shift's metric (mean and 95%
interval from reports/summary.json) against one param, over the workspace, its baseline and every
experiment of it, as a figure and a CSV.

Run a sweep, then draw it (inside the venv):
    dvc exp run --queue -S 'curation.clip_threshold=range(0.3,0.8,0.1)'
    dvc queue start -j 1          # one at a time: each run uses both cores
    python -m bench.sweep --param curation.clip_threshold --shift la_txt2img
Writes bench/out/sweep_<param>_<shift>_<metric>.{png,csv}.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

SUMMARY = "reports/summary.json"


def _dig(d, dotted: str):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _rows(entry: dict, param: str, shift: str, metric: str):
    data = entry.get("data") or {}
    value = _dig((data.get("params") or {}).get("params.yaml", {}).get("data"), param)
    m = _dig((data.get("metrics") or {}).get(SUMMARY, {}).get("data"), f"{shift}.{metric}")
    if value is None or not isinstance(m, dict) or m.get("mean") is None:
        return []
    rev = entry.get("rev") or ""
    return [{"rev": rev, "name": entry.get("name") or (rev if rev == "workspace" else rev[:7]), param: value,
             "mean": m["mean"], "lo": m.get("lo"), "hi": m.get("hi"), "n": m.get("n")}]


def points(show: list, param: str, shift: str, metric: str) -> pd.DataFrame:
    """One row per run (workspace, baselines, experiments) that has both the param and the metric;
    a run whose metric is missing (failed, or not reached) is left out. Same param value twice:
    the first listed (the workspace, then newest) is kept."""
    rows = []
    for base in show:
        rows += _rows(base, param, shift, metric)
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                rows += _rows(rev, param, shift, metric)
    df = pd.DataFrame(rows, columns=["rev", "name", param, "mean", "lo", "hi", "n"])
    return df.drop_duplicates(subset=[param]).sort_values(param).reset_index(drop=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.sweep")
    ap.add_argument("--param", required=True, help="dotted params.yaml key, e.g. curation.clip_threshold")
    ap.add_argument("--shift", required=True)
    ap.add_argument("--metric", default="top1", help="a key of reports/summary.json under the shift")
    ap.add_argument("--show-json", help="read this file instead of running `dvc exp show --json`")
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args(argv)
    if args.show_json:
        show = json.loads(Path(args.show_json).read_text())
    else:
        r = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"bench.sweep: `dvc exp show --json` failed: {r.stderr.strip().splitlines()[-1:]}")
        show = json.loads(r.stdout)
    df = points(show, args.param, args.shift, args.metric)
    if df.empty:
        sys.exit(f"bench.sweep: no run has both {args.param} and {SUMMARY} -> {args.shift}.{args.metric}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"sweep_{args.param.replace('.', '_')}_{args.shift}_{args.metric}"
    df.to_csv(stem.with_suffix(".csv"), index=False)
    fig, ax = plt.subplots(figsize=(6, 4))
    yerr = [df["mean"] - df["lo"].fillna(df["mean"]), df["hi"].fillna(df["mean"]) - df["mean"]]
    ax.errorbar(df[args.param], df["mean"], yerr=yerr, marker="o", capsize=3)
    ax.set_xlabel(args.param)
    ax.set_ylabel(f"{args.shift} {args.metric} (95% interval)")
    ax.set_title(f"{len(df)} runs from dvc exp show")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print(df.to_string(index=False))
    print(f"-> {stem}.png, {stem}.csv")


if __name__ == "__main__":
    main()
