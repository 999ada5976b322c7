"""audit: near-copies of evaluation images in every shift -> data/audit/<shift>.parquet (the
flagged items; shard@<shift> leaves them out when audit.remove) + data/audit/summary.json
(thresholds per evaluation set, counts per shift, set and detector)."""
import argparse
import time

from tqdm import tqdm

from selectbench.core import layout
from selectbench.core.index import read_index
from selectbench.core.io import atomic_path, write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import all_threads, limit_threads, stage_main
from selectbench.curation.context import Context
from selectbench.evaluation import contamination as C
from selectbench.evaluation.audit import audit_shift, evaluation_sets, shift_fingerprints


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.audit")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    limit_threads(all_threads())
    p = load_params(args.params)
    rate = get(p, "audit.null_rate", float, lo=0.0, hi=0.999)
    remove = get(p, "audit.remove", bool)
    ctx = Context(p)
    sets = evaluation_sets(ctx, get(p, "transfer.tasks", list), get(p, "embed.batch_size", int, lo=1))
    thresholds = {name: C.calibrate(C.nearest(fp, fp, skip_self=True), rate) for name, fp in sets.items()}
    summary = {"null_rate": rate, "remove": remove,
               "sets": {name: {"items": len(fp), **thresholds[name].as_dict()} for name, fp in sets.items()},
               "shifts": {}}
    layout.AUDIT.mkdir(parents=True, exist_ok=True)
    for shift in tqdm(get(p, "shifts", dict), desc="audit shifts", unit="shift"):
        index = read_index(layout.curated(shift) / "index.parquet")
        fp, ok = shift_fingerprints(ctx, index, layout.curated(shift))
        flagged, counts = audit_shift(fp, ok, index["sample_id"].to_numpy(), sets, thresholds)
        with atomic_path(layout.audit(shift)) as tmp:
            flagged.to_parquet(tmp, index=False, compression="zstd", engine="pyarrow")
        summary["shifts"][shift] = {"items": int(len(index)), "flagged_items": int(flagged["position"].nunique()),
                                    "per_set": counts}
    write_json(layout.AUDIT_SUMMARY, summary)
    write_json(layout.cost("audit"), {"wall_s": round(time.perf_counter() - t0, 2)})
    hits = {s: v["flagged_items"] for s, v in summary["shifts"].items() if v["flagged_items"]}
    print(f"audit: {len(sets)} evaluation sets, {len(summary['shifts'])} shifts; near-copies {hits or 'none'}"
          f" ({'removed before training' if remove else 'kept: audit.remove is false'}; {time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
