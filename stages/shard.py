"""shard@<shift>: the curated index -> WebDataset tar shards + sizes.json under data/shards/<shift>.

Pixels are read through selectbench.images (arrays, or the full profile's adapters, decoded in
chunks); an image that cannot be decoded is left out and counted in summary.json, not trained on.
Shard s holds positions [s * per_shard, (s + 1) * per_shard) of the seeded order, keyed by
position, so with shard.nproc > 1 the ranks write shard s on rank s % world and the bytes are the
ones one process writes."""
import argparse
from collections import Counter

import numpy as np
import pandas as pd

from selectbench.core import layout, shards
from selectbench.core.errors import UserError
from selectbench.core.images import is_lazy, take
from selectbench.core.index import read_index
from selectbench.core.io import write_json
from selectbench.core.params import get, load_params
from selectbench.core.runtime import finish_distributed, stage_main, start_ranks
from selectbench.curation.context import image_arrays

CHUNK = 256  # images decoded per read; bounds memory whatever the shift's size


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.shard")
    ap.add_argument("shift")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    comm = start_ranks(get(p, "shard.nproc", int, lo=1), "stages.shard", [args.shift, "--params", args.params])
    rank, world = comm.rank, comm.world
    per_shard = get(p, "shard.samples_per_shard", int, lo=1)
    seed = get(p, "shard.seed", int)
    curated = layout.curated(args.shift)
    index = read_index(curated / "index.parquet")
    arrays = image_arrays(index, curated)
    # Shuffle once so every shard mixes classes; training adds its own shard + buffer shuffle.
    order = np.random.default_rng(seed).permutation(len(index))
    removed = 0
    if get(p, "audit.remove", bool):  # near-copies of evaluation images never reach training
        flagged = layout.audit(args.shift)
        if not flagged.exists():
            raise UserError(f"shard@{args.shift}: {flagged} missing (run the audit stage, or set audit.remove: false)")
        drop = np.isin(order, pd.read_parquet(flagged, columns=["position"])["position"].to_numpy())
        order, removed = order[~drop], int(drop.sum())
    src, rows, labels = index["source"].to_numpy(), index["row"].to_numpy(), index["label"].to_numpy()
    ids, scores = index["sample_id"].to_numpy(), index["score"].to_numpy()
    failed: Counter = Counter()
    channels = set()

    def samples(s: int):
        end = min(len(order), (s + 1) * per_shard)
        for start in range(s * per_shard, end, CHUNK):
            chunk = order[start:min(end, start + CHUNK)]
            got = {}
            for source in np.unique(src[chunk]):
                sel = chunk[src[chunk] == source]
                imgs, ok = take(arrays[source], rows[sel])
                got.update({int(i): (im if good else None) for i, im, good in zip(sel, imgs, ok)})
                if is_lazy(arrays[source]):
                    failed.update(arrays[source].failed[int(r)] for r in rows[sel][~ok])
            for pos, i in enumerate(chunk, start=start):
                img = got[int(i)]
                if img is None:
                    continue
                channels.add(1 if img.ndim == 2 else img.shape[2])
                meta = {"sample_id": str(ids[i]), "source": str(src[i]), "score": float(scores[i])}
                yield f"{pos:08d}", img, int(labels[i]), meta

    sizes = shards.write_shards_split(samples, -(-len(order) // per_shard), layout.shards(args.shift), comm)
    channels = set().union(*comm.gather(channels))
    failed = sum(comm.gather(failed), Counter())
    if rank != 0:
        finish_distributed(world)
        return
    n = int(sum(sizes.values()))
    if len(channels) > 1:
        raise UserError(f"shard@{args.shift}: images of mixed channel counts {sorted(channels)}")
    summary = {"samples": n, "shards": len(sizes), "channels": channels.pop() if channels else 1,
               "contaminated_removed": removed}
    if failed:
        summary["undecodable"] = dict(sorted(failed.items()))
    write_json(layout.shards(args.shift) / "summary.json", summary)
    note = f"; {sum(failed.values())} undecodable images left out ({dict(failed)})" if failed else ""
    note += f"; {removed} near-copies of evaluation images left out (audit)" if removed else ""
    print(f"shard@{args.shift}: {n} samples in {len(sizes)} shards{note}")
    finish_distributed(world)


if __name__ == "__main__":
    main()
