"""manifests: a cheap manifest of each external dataset, the dependency through which DVC sees them.

Runs on every `dvc repro` (always_changed): sizes and mtimes of every file, content hashes of
metadata files (selectbench.core.manifest). A group whose data did not change gets a byte-identical
file, so DVC reruns nothing that depends on it; the embedded profile reads no external data and
gets constant files.

    python -m stages.manifests [--params params.yaml] [--out data/manifests]
"""
import argparse
import time
from pathlib import Path

from selectbench.core import layout
from selectbench.core import manifest as M
from selectbench.core.params import get, load_params, profile
from selectbench.core.runtime import stage_main

NATURAL = ("imagenet_v2", "imagenet_r", "imagenet_a", "imagenet_sketch")
OPENIMAGES = ("labels_csv", "descriptions_csv", "mapping_json", "images_dir")


def _paths(p: dict, keys) -> dict:
    return {k: get(p, k, (str, type(None))) for k in keys}


def groups(p: dict) -> dict:
    """group -> {param key: path} of the external data each reading stage takes, or None when the
    profile does not read it."""
    full = profile(p) == "full"
    return {
        "imagenet": _paths(p, ("full.imagenet.train", "full.imagenet.val")) if full else None,
        "pool": _paths(p, ("full.laion.root", "full.laion.shards", *(f"full.openimages.{k}" for k in OPENIMAGES),
                           *(f"full.natural.{k}" for k in NATURAL))) if full else None,
        # VTAB tasks may be listed in either profile; a null root is simply not read.
        "vtab": _paths(p, ("transfer.vtab_root",)),
    }


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.manifests")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.MANIFESTS))
    args = ap.parse_args(argv)
    p = load_params(args.params)
    cache = M.HashCache(layout.MANIFEST_HASHES)
    t0 = time.perf_counter()
    said = []
    for group, sources in groups(p).items():
        body = M.write(Path(args.out) / f"{group}.json", sources, cache, reason=f"profile {profile(p)}")
        found = [v for v in (body.get("sources") or {}).values() if v]
        said.append(f"{group} " + (f"{sum(v.get('files', 1) for v in found if not v.get('missing'))} files"
                                   if found else "not read"))
    cache.save()
    print(f"manifests: {'; '.join(said)}; {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
