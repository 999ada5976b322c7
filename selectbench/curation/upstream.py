"""What each strategy needs beyond its own stage, for the report's cost model: the upstream models
it uses (their stages' measured compute is shared among the shifts that use them) and the human
labour it assumes per image."""
from __future__ import annotations

# strategy -> the upstream stages whose outputs it reads (cost records reports/cost/<stage>.json).
# A rebalanced shift also uses the embedder (hierarchical k-means over its embeddings).
UPSTREAM = {
    "balanced": (),
    "substring": (),
    "schema_map": (),
    "img2img": ("train_embedder", "embed"),
    "txt2img": ("train_embedder", "embed"),
    "hkm": ("train_embedder", "embed"),
    "clip_score": ("train_embedder", "embed"),
    "sd_txt2img": ("train_embedder", "train_generator"),   # the generator conditions on the embedder's text tower
    "sd_img2img": ("train_embedder", "train_generator"),
}
REBALANCE = ("train_embedder", "embed")  # also what the semdedup and clean options need
# The stats keys by which a curated shift says it ran an option over the embedder's embeddings.
EMBEDDING_OPTIONS = ("rebalanced_from", "semdedup_from", "cleaned_from")

# strategy -> (human labour per curated image, (low, high) human yes/no judgements per kept image);
# absent: none. `balanced` stands for expert curation (ImageNet-style votes on search candidates:
# ~10 candidates per kept image, 1-3 votes each); `schema_map` for crowd labels kept only where a
# human verified the machine-proposed label (one judgement). Sources and arithmetic: docs/labour.md.
LABOUR = {
    "balanced": ("expert label", (10, 30)),
    "schema_map": ("crowd verification", (1, 1)),
}


def upstream(strategy: str, rebalanced: bool) -> tuple[str, ...]:
    """Sorted upstream stages a shift of this strategy needs."""
    if strategy not in UPSTREAM:
        raise KeyError(f"no cost entry for strategy {strategy!r}; add it to selectbench/curation/upstream.py")
    return tuple(sorted(set(UPSTREAM[strategy]) | (set(REBALANCE) if rebalanced else set())))
