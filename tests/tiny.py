"""A tiny profile of params.yaml: the same stages and code path, sized for tests (seconds)."""
import copy

import yaml


def tiny_params(base_path="params.yaml", shifts=("in", "la_txt2img", "sd_img2img")) -> dict:
    with open(base_path) as f:
        p = yaml.safe_load(f)
    p = copy.deepcopy(p)
    p["data"]["base_reserve"] = 30000
    pool = p["pool"]
    pool["workers"] = 1
    pool["fmnist"]["n"] = 400
    pool["clipart"]["max"] = 40
    pool["emoji"]["max"] = 40
    pool["mnist"]["n"] = 60
    p["embedder"].update(steps=3, batch_size=64)
    p["embed"]["batch_size"] = 512
    p["generator"].update(steps=2, batch_size=8, ckpt_every=0)
    p["judge"]["encoder"].update(steps=2, batch_size=8)
    p["judge"]["classifier"].update(steps=2, batch_size=8)
    p["judge"]["quality_per_class"] = 3
    p["shifts"] = {k: v for k, v in p["shifts"].items() if k in shifts}
    for k, s in p["shifts"].items():
        for key in ("per_class", "queries_per_class"):
            if key in s:
                s[key] = 8 if s["strategy"] == "balanced" else 3
        if s["strategy"].startswith("sd_"):
            s.update(steps=2, batch_size=16)
        if s["strategy"] == "hkm":
            s.update(n=60, levels=[8, 2], n_iter=5, resample_steps=1)
        if s.get("rebalance"):
            s["rebalance"].update(n=30, levels=[6, 2], n_iter=5, resample_steps=1)
    p["shard"]["samples_per_shard"] = 50
    p["train"].update(steps=3, batch_size=8, shuffle_buffer=20, ckpt_every=0)
    p["corrupt"]["n"] = 2
    p["transfer"].update(steps=2, batch_size=8)
    p["evaluate"].update(quality_items=50, noise_items=60, ssl_k=[10, 20])
    p["report"]["tail_threshold"] = 5
    p["report"]["decision"]["draws"] = 200
    p["replicates"] = ["r1", "r2"]
    return p


def write(p: dict, path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(p, f, sort_keys=False)
