"""Simulated web captions: the class named correctly, wrongly (a confusable class first), not at
all, or together with another class, with shop-style filler words."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from selectbench.embedded.meta import Classes

# Caption vocabulary. None of these words is a class name or synonym (checked by the tests), so
# the caption's class mentions are exactly the ones the noise process put there.
_COLOURS = ["black", "white", "navy", "red", "beige", "grey", "olive", "pink", "mustard", "burgundy", "cream", "teal"]
_MATERIALS = ["cotton", "denim", "wool", "leather", "suede", "linen", "canvas", "knit", "faux fur", "nylon"]
_ADJECTIVES = ["classic", "vintage", "slim fit", "oversized", "premium", "casual", "summer", "winter",
               "organic", "handmade", "limited edition", "lightweight", "waterproof", "retro"]
_BRANDS = ["Valtoro", "Nordvik", "Kestrel", "Maison Verte", "Azura", "Boldline", "Fjell", "Ostara",
           "Calder & Co", "Lumo", "Ridgeway", "Sable & Pine"]
_WHO = ["women's", "men's", "kids'", "unisex", "girls'", "boys'"]
_EXTRAS = ["for sale", "free shipping", "new arrival", "best price", "in stock", "size S", "size M",
           "size L", "size XL", "EU 38", "EU 42", "UK 10", "sale -30%", "2 colours", "ships today"]
_ONE = ["{pre}{a}{post}", "{brand} {pre}{a}{post}", "{who} {pre}{a}{post}", "{pre}{a} - {brand}{post}",
        "buy {pre}{a} online{post}", "{pre}{a} by {brand}{post}"]
_TWO = ["{pre}{a} and {b}{post}", "{pre}{a} with matching {b}{post}", "{brand} {a} + {b} set{post}",
        "outfit: {a}, {b}{post}", "{who} {a} or {b}{post}"]
_NONE = ["{brand} {adj} collection{post}", "new arrival - {brand} {colour}{post}", "IMG_{num}.jpg",
         "product photo {num}", "{colour} {material} {adj}{post}", "shop the look: {brand}{post}",
         "image {k} of {m}", "{brand} spring sale{post}", "{who} {colour} {material}{post}"]
KIND_NAMES = ("correct", "wrong_class", "no_class_word", "several_classes")


def make_captions(
    labels: np.ndarray, classes: Classes, ccfg: dict, rng: np.random.Generator
) -> tuple[list[str], np.ndarray]:
    """Simulated web captions for Fashion-MNIST items; returns captions and the intended kind."""
    n, k = len(labels), len(classes.names)
    p = np.array([ccfg["wrong_class_rate"], ccfg["no_class_word_rate"], ccfg["several_classes_rate"]])
    probs = np.concatenate([[max(0.0, 1.0 - p.sum())], p])
    kinds = rng.choice(4, size=n, p=probs / probs.sum())
    # One random column per decision so decisions are independent; the synonym and sibling draws
    # take two columns each, one per noun of a two-class caption.
    U_COLOUR, U_ADJ, U_POST, U_SWAP, U_SYN, U_SIB = 0, 1, 2, 3, 4, 6
    u = rng.random((n, 8))
    P_COLOUR, P_ADJ, P_ADJ_KIND, P_POST, P_BRAND, P_WHO, P_MAT, P_NUM, P_K, P_M, P_TMPL = range(11)
    P_SYN, P_OTHER = 11, 13
    picks = rng.integers(0, 1 << 30, size=(n, 15))

    def choose(seq, col, i):
        return seq[picks[i, col] % len(seq)]

    def noun(c: int, i: int, j: int) -> str:
        syns = [s for s in classes.synonyms[c] if s != classes.names[c]]
        if syns and u[i, U_SYN + j] < ccfg["synonym_rate"]:
            return syns[picks[i, P_SYN + j] % len(syns)]
        return classes.names[c]

    def other_class(c: int, i: int, j: int) -> int:
        sib = classes.siblings[c]
        if sib and u[i, U_SIB + j] < ccfg["sibling_share"]:
            return sib[picks[i, P_OTHER + j] % len(sib)]
        rest = [d for d in range(k) if d != c]
        return rest[picks[i, P_OTHER + j] % len(rest)]

    er = ccfg["extra_word_rate"]
    captions = []
    for i in range(n):
        c = int(labels[i])
        pre = ""
        if u[i, U_COLOUR] < er:
            pre += choose(_COLOURS, P_COLOUR, i) + " "
        if u[i, U_ADJ] < er:
            pre += choose(_ADJECTIVES if picks[i, P_ADJ_KIND] % 2 else _MATERIALS, P_ADJ, i) + " "
        post = (" " + choose(_EXTRAS, P_POST, i)) if u[i, U_POST] < er else ""
        fill = {"pre": pre, "post": post, "brand": choose(_BRANDS, P_BRAND, i), "who": choose(_WHO, P_WHO, i),
                "adj": choose(_ADJECTIVES, P_ADJ, i), "colour": choose(_COLOURS, P_COLOUR, i),
                "material": choose(_MATERIALS, P_MAT, i), "num": picks[i, P_NUM] % 100000,
                "k": 1 + picks[i, P_K] % 5, "m": 5 + picks[i, P_M] % 4}
        kind = int(kinds[i])
        tmpl = picks[i, P_TMPL]
        if kind == 0:
            text = _ONE[tmpl % len(_ONE)].format(a=noun(c, i, 0), **fill)
        elif kind == 1:
            text = _ONE[tmpl % len(_ONE)].format(a=noun(other_class(c, i, 0), i, 0), **fill)
        elif kind == 2:
            text = _NONE[tmpl % len(_NONE)].format(**fill)
        else:
            a, b = noun(c, i, 0), noun(other_class(c, i, 1), i, 1)
            if u[i, U_SWAP] < 0.5:
                a, b = b, a
            text = _TWO[tmpl % len(_TWO)].format(a=a, b=b, **fill)
        captions.append(" ".join(text.split()))
    return captions, kinds


def caption_kind_realised(captions: Iterable[str], labels: Iterable[int], classes: Classes) -> np.ndarray:
    """Kind of each caption as a class-word matcher sees it (0 correct .. 3 several)."""
    out = []
    for cap, c in zip(captions, labels):
        m = classes.mentioned(cap)
        if not m:
            out.append(2)
        elif len(m) > 1:
            out.append(3)
        else:
            out.append(0 if m == {int(c)} else 1)
    return np.array(out, dtype=np.int64)
