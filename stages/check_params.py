"""check_params: every key in params.yaml is a known one; first stage of the DAG.

    python -m stages.check_params [--params params.yaml] [--out data/params.ok]
    python -m stages.check_params --write-keys   # after adding a key to params.yaml / params-full.yaml
    python -m stages.check_params --apply params-full.yaml   # merge a profile's values into params.yaml

An unknown key (a typo, or `dvc exp run -S +train.lrr=0.1`) fails here with one line naming it and
the closest known key. The output is constant, so a valid param change reruns nothing downstream.
"""
import argparse
from pathlib import Path

from selectbench.core import layout
from selectbench.core.io import atomic_path
from selectbench.core.params import KEYS_FILE, apply_profile, check, derive_keys_from, load_params, write_keys
from selectbench.core.runtime import stage_main

ROOT = Path(__file__).resolve().parents[1]


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.check_params", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(layout.PARAMS_OK))
    ap.add_argument("--write-keys", action="store_true", help=f"regenerate {KEYS_FILE.name} from the default profiles")
    ap.add_argument("--apply", metavar="PROFILE_YAML", help="merge this file's values into --params (comments kept)")
    args = ap.parse_args(argv)
    if args.apply:
        n = apply_profile(args.apply, args.params)
        check(load_params(args.params))
        print(f"check_params: {n} values from {args.apply} merged into {args.params}")
        return 0
    if args.write_keys:
        write_keys(derive_keys_from(ROOT))
        print(f"check_params: wrote {KEYS_FILE}")
        return 0
    check(load_params(args.params))
    with atomic_path(args.out) as tmp:
        tmp.write_text("params.yaml: every key known\n")
    print(f"check_params: {args.params} ok")
    return 0


if __name__ == "__main__":
    main()
