"""WebDataset shards: tar files of (png or jpg, cls, json) samples plus open_clip's sizes.json.

Grey [H,W] images are stored as PNG (lossless), RGB [H,W,3] ones as JPEG (quality 95), the usual storage for photos.

Tars are written with fixed headers (mtime 0, no owner) so the same samples give the same bytes."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from selectbench.core.comm import LOCAL, Local
from selectbench.core.errors import UserError
from selectbench.core.io import read_json

SHARD_PATTERN = "shard-{:06d}.tar"


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def jpg_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def image_member(img: np.ndarray) -> tuple[str, bytes]:
    """(extension, bytes) of one image: grey [H,W] -> png, uint8 RGB [H,W,3] -> jpg."""
    if img.ndim == 2:
        return "png", png_bytes(img)
    if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
        return "jpg", jpg_bytes(img)
    raise ValueError(f"image of shape {img.shape} ({img.dtype}): expected grey (H, W) or uint8 RGB (H, W, 3)")


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _add_sample(tar: tarfile.TarFile, key: str, img, label: int, meta: dict) -> None:
    ext, data = image_member(np.asarray(img))
    add_member(tar, f"{key}.{ext}", data)
    add_member(tar, f"{key}.cls", str(int(label)).encode())
    add_member(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _publish(tmp: Path, out: Path, sizes: dict[str, int]) -> None:
    with open(tmp / "sizes.json", "w") as f:
        json.dump(sizes, f, indent=2, sort_keys=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def write_shards(samples: Iterable[tuple[str, np.ndarray, int, dict]], out_dir: str | Path, per_shard: int,
                 total: int | None = None) -> dict[str, int]:
    """Write samples (key, image, label, meta) into out_dir; returns sizes {shard name: count}.

    Shards are written into a sibling temp dir and moved into place at the end, so a killed run
    never leaves a plausible-looking partial shard set behind.
    """
    out = Path(out_dir)
    tmp = _partial(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sizes: dict[str, int] = {}
    tar = None
    n = 0
    for key, img, label, meta in tqdm(samples, total=total, desc=f"shard {out.name}", unit="img", mininterval=2):
        if n % per_shard == 0:
            if tar is not None:
                tar.close()
            name = SHARD_PATTERN.format(n // per_shard)
            tar = tarfile.open(tmp / name, "w", format=tarfile.USTAR_FORMAT)
            sizes[name] = 0
        _add_sample(tar, key, img, label, meta)
        sizes[name] += 1
        n += 1
    if tar is not None:
        tar.close()
    _publish(tmp, out, sizes)
    return sizes


def write_shards_split(shard_samples: Callable[[int], Iterable[tuple[str, np.ndarray, int, dict]]], n_shards: int,
                       out_dir: str | Path, comm: Local = LOCAL) -> dict[str, int] | None:
    """Shard s holds the samples shard_samples(s) (key, image, label, meta), written on rank
    s % world of comm: the same bytes for any world size. Like write_shards, all of them appear
    in out_dir together at the end. Returns the sizes on rank 0, None on the others."""
    out = Path(out_dir)
    tmp = _partial(out)
    if comm.rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    comm.barrier()
    sizes: dict[str, int] = {}
    for s in tqdm(comm.mine(n_shards), desc=f"shard {out.name}", unit="shard", mininterval=2,
                  disable=comm.rank != 0):
        name = SHARD_PATTERN.format(s)
        with tarfile.open(tmp / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            sizes[name] = 0
            for key, img, label, meta in shard_samples(s):
                _add_sample(tar, key, img, label, meta)
                sizes[name] += 1
    sizes = {k: v for part in comm.gather(sizes) for k, v in part.items()}
    if comm.rank == 0:
        _publish(tmp, out, dict(sorted(sizes.items())))
    comm.barrier()
    return sizes if comm.rank == 0 else None


def shard_urls(shard_dir: str | Path) -> tuple[list[str], dict[str, int]]:
    d = Path(shard_dir)
    with open(d / "sizes.json") as f:
        sizes = json.load(f)
    return [str(d / name) for name in sorted(sizes)], sizes


def tar_members(url: str) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file in a tar, parsing the 512-byte headers directly.

    Python's tarfile spends ~20 us per member on header objects, three times the PNG decode
    of a 28 px image; the shards this module writes are plain USTAR, read here as one buffer.
    Anything else (pax/GNU long names, links) goes through tarfile."""
    with open(url, "rb") as f:
        buf = f.read()
    out, off, n, ended = [], 0, len(buf), False
    while off + 512 <= n:
        h = buf[off:off + 512]
        if h[0] == 0:  # end-of-archive blocks
            ended = True
            break
        if h[257:262] != b"ustar" or h[156:157] not in (b"0", b"\0") or h[345] != 0:
            yield from _tarfile_members(url)
            return
        size = int(h[124:136].rstrip(b"\0 ") or b"0", 8)
        name = h[:100].rstrip(b"\0").decode()
        if off + 512 + size > n:
            raise ValueError(f"{url}: truncated tar (member {name!r} runs past the end)")
        out.append((name, buf[off + 512:off + 512 + size]))
        off += 512 + (size + 511) // 512 * 512
    if not ended:
        raise ValueError(f"{url}: truncated tar (no end-of-archive block after {len(out)} members)")
    yield from out


def _tarfile_members(url: str) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(url) as tar:
        for m in tar:
            if m.isfile():
                yield m.name, tar.extractfile(m).read()


def tar_samples(urls) -> Iterator[dict]:
    """WebDataset samples ({"__key__", "__url__", ext: bytes}) from tar shards, grouped by key.

    Also a webdataset pipeline stage: given dicts with a "url" it reads those shards."""
    for url in urls:
        url = url["url"] if isinstance(url, dict) else url
        cur: dict = {}
        for name, data in tar_members(url):
            key, ext = name.rsplit(".", 1)
            if cur and cur["__key__"] != key:
                yield cur
                cur = {}
            if not cur:
                cur = {"__key__": key, "__url__": url}
            cur[ext] = data
        if cur:
            yield cur


def image_data(sample: dict) -> bytes:
    """The encoded image of a sample, whichever format write_shards chose for it."""
    return sample["png"] if "png" in sample else sample["jpg"]


def iter_samples(urls: list[str]) -> Iterator[tuple[str, bytes, int]]:
    """Plain sequential reader (tests and benchmarks): (key, png or jpg bytes, class)."""
    for s in tar_samples(urls):
        yield s["__key__"], image_data(s), int(s["cls"])


def decode_image(data: bytes, mode: str) -> np.ndarray:
    """uint8 [H,W] for mode "L", [H,W,3] for "RGB", whatever the stored format."""
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode))


def decode_png(data: bytes) -> np.ndarray:
    return decode_image(data, "L")


def channels(shard_dir: str | Path) -> int:
    """Image channels of the shards; 1 for shards written before the shard stage recorded it."""
    path = Path(shard_dir) / "summary.json"
    chans = read_json(path).get("channels", 1) if path.exists() else 1
    if chans not in (1, 3):
        raise UserError(f"{path}: channels must be 1 or 3, got {chans!r}")
    return chans
