"""Cheap manifests of external datasets, so that DVC sees when data outside the repository change.

DVC cannot hash ImageNet or LAION in place (hundreds of GB), so the `manifests` stage, which runs
on every `dvc repro`, writes one small JSON per source group instead: for every top-level entry
of each dataset root its file count, bytes and a digest of the (path, size, mtime) listing below
it, plus a content hash of each metadata file (CSV/TSV, parquet, JSON) anywhere below. The
stages that read a group list its manifest as a dependency: an edited CSV, a removed or replaced
tar, an added image reruns them; an unchanged dataset writes a byte-identical manifest, so DVC
reruns nothing below it. Content hashes are cached by (path, size, mtime, ctime, inode) in data/tmp,
so a metadata file is read again only when it changed."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

HASHED = frozenset({".csv", ".tsv", ".parquet", ".json"})
CHUNK = 1 << 20


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class HashCache:
    """path -> (size, mtime_ns, ctime_ns, inode, sha256), saved as JSON; any stat change means a
    rehash. ctime is in the stamp because a rewrite that keeps size and resets mtime (cp -p,
    os.utime) still moves it, and no user call can set it back."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.old: dict = {}
        if self.path and self.path.exists():
            try:
                self.old = json.loads(self.path.read_text())
            except ValueError:
                self.old = {}
        self.new: dict = {}

    def sha256(self, path: str, st: os.stat_result) -> str:
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = self.old.get(path)
        digest = hit[4] if hit and hit[:4] == stamp else _sha256(path)
        self.new[path] = stamp + [digest]
        return digest

    def save(self) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.new, sort_keys=True))


def _walk(top: str, rel: str = ""):
    """(relative path, stat) of every file below top, sorted; hidden entries skipped."""
    with os.scandir(top) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for e in entries:
        r = f"{rel}{e.name}"
        if e.is_dir(follow_symlinks=True):
            yield from _walk(e.path, r + "/")
        elif e.is_file(follow_symlinks=True):
            yield r, e.stat(follow_symlinks=True)


def describe(path: str | None, cache: HashCache) -> dict | None:
    """The manifest entry of one dataset root (a folder or a single file); None if unset."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        return {"path": str(p), "missing": True}  # the stage reading it names the key in its error
    if p.is_file():
        st = p.stat()
        out = {"path": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
        if p.suffix.lower() in HASHED:
            out["sha256"] = cache.sha256(str(p.resolve()), st)
        return out
    root = str(p.resolve())
    entries: dict[str, dict] = {}
    content: dict[str, str] = {}
    for rel, st in _walk(root):
        top = rel.split("/", 1)[0]
        e = entries.setdefault(top, {"files": 0, "bytes": 0, "h": hashlib.sha256()})
        e["files"] += 1
        e["bytes"] += st.st_size
        e["h"].update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        if os.path.splitext(rel)[1].lower() in HASHED:
            content[rel] = cache.sha256(os.path.join(root, rel), st)
    return {"path": root, "files": sum(e["files"] for e in entries.values()),
            "bytes": sum(e["bytes"] for e in entries.values()),
            "entries": {k: {"files": e["files"], "bytes": e["bytes"], "listing": e["h"].hexdigest()[:16]}
                        for k, e in entries.items()},
            "content_sha256": content}


def write(out: str | os.PathLike, sources: dict[str, str | None] | None, cache: HashCache, reason: str = "") -> dict:
    """One group's manifest; sources=None writes a constant 'not read' file (e.g. the embedded
    profile reads no external data), so the stages depending on it never rerun for it."""
    body = ({"read": False, "why": reason} if sources is None
            else {"read": True, "sources": {k: describe(v, cache) for k, v in sources.items()}})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return body
