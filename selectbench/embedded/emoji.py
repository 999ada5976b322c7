"""Noto Color Emoji glyphs rendered as grey base-format images, with their Unicode group and name."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from selectbench.embedded.render import to_base_format

# NotoColorEmoji is a bitmap (CBDT) font with a single strike; PIL renders it only at this size.
EMOJI_FONT_SIZE = 109
SKIN_TONES = frozenset(f"1F3F{c}" for c in "BCDEF")
_FONT_CACHE: dict[str, ImageFont.FreeTypeFont] = {}


def render_emoji(task: tuple[str, str]) -> tuple[str, np.ndarray | None, str]:
    """(font path, 'HEX HEX') -> (codepoints, image or None, status)."""
    font_path, cps = task
    font = _FONT_CACHE.get(font_path)
    if font is None:
        font = _FONT_CACHE[font_path] = ImageFont.truetype(font_path, EMOJI_FONT_SIZE)
    text = "".join(chr(int(c, 16)) for c in cps.split())
    canvas = Image.new("RGBA", (176, 176), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    arr = to_base_format(canvas)
    if arr is None:
        return cps, None, "blank"
    return cps, arr, "ok"


@dataclass
class EmojiEntry:
    cps: str
    name: str
    group: str
    subgroup: str


_EMOJI_LINE = re.compile(r"^([0-9A-F ]+?)\s*;\s*([a-z-]+)\s*#\s*\S+\s+E\d+\.\d+\s+(.+)$")


def parse_emoji_test(path: str | Path) -> list[EmojiEntry]:
    out, group, subgroup = [], "", ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif line.startswith("# subgroup:"):
                subgroup = line.split(":", 1)[1].strip()
            elif line and not line.startswith("#"):
                m = _EMOJI_LINE.match(line)
                if m and m.group(2) == "fully-qualified":
                    out.append(EmojiEntry(" ".join(m.group(1).split()), m.group(3).strip(), group, subgroup))
    return out


def _strip_tones(cps: str) -> tuple[str, bool]:
    """Base sequence without skin tones and presentation selectors; whether a tone was present."""
    parts = cps.split()
    kept = [p for p in parts if p not in SKIN_TONES and p != "FE0F"]
    return " ".join(kept), any(p in SKIN_TONES for p in parts)


_EMOJI_CLOTHING = (
    (("glasses", "goggles"), "eyewear"),
    (("hat", "cap", "helmet", "crown"), "hat"),
    (("shoe", "sandal", "boot"), "shoe"),
    (("shorts", "briefs"), "shorts"),
    (("socks",), "socks"),
    (("gloves",), "gloves"),
    (("scarf",), "scarf"),
    (("necktie",), "necktie"),
    (("purse", "handbag", "clutch", "bags", "backpack"), "bag"),
    (("ring", "gem", "lipstick", "beads", "pick", "fan"), "accessory"),
)


def emoji_concept(e: EmojiEntry) -> str:
    """What a machine tagger would see in the glyph, from the emoji-test taxonomy."""
    g, sg, name = e.group, e.subgroup, e.name.lower()
    if sg == "clothing":
        for words, concept in _EMOJI_CLOTHING:
            if any(re.search(rf"\b{w}\b", name) for w in words):
                return concept
        return "garment"
    if g == "Smileys & Emotion":
        return "smiley"
    if g == "People & Body":
        return "person"
    if g == "Animals & Nature":
        return "plant" if sg.startswith("plant") else "animal"
    if g == "Food & Drink":
        return "food"
    if g == "Travel & Places":
        if sg.startswith("transport"):
            return "vehicle"
        return "weather" if sg == "sky & weather" else "building"
    if g == "Activities":
        return "sport" if sg == "sport" else "activity"
    if g == "Objects":
        return "instrument" if sg == "musical-instrument" else ("tool" if sg == "tool" else "object")
    if g == "Flags":
        return "flag"
    return "symbol"
