"""download: Debian files or the canonical URL, checksum-verified; the base/pool partition."""
import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from selectbench.core import layout
from selectbench.core.errors import UserError
from selectbench.embedded import fmnist

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(not DEBIAN.exists(), reason="Debian's dataset-fashion-mnist is not installed")


@pytest.fixture()
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 serving a copy of the four files."""
    root = tmp_path / "www"
    root.mkdir()
    for f in fmnist.FILES.values():
        shutil.copy(DEBIAN / f, root / f)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_parse_idx_rejects_bad_magic_and_size():
    good = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3])
    assert fmnist.parse_idx(good).tolist() == [1, 2, 3]
    with pytest.raises(UserError, match="magic"):
        fmnist.parse_idx(bytes([1, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(UserError, match="implies"):
        fmnist.parse_idx(good[:-1])


@needs_debian
def test_download_over_http_verifies_checksums(http_root, tmp_path):
    root, url = http_root
    arrays = fmnist.fetch(None, url, tmp_path / "cache")
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert arrays["test_labels"].shape == (10000,)
    # A corrupted file on the server is refused, and the bad download is not kept.
    raw = gzip.open(root / fmnist.FILES["test_labels"]).read()
    with gzip.open(root / fmnist.FILES["test_labels"], "wb") as f:
        f.write(raw[:-1] + bytes([(raw[-1] + 1) % 256]))
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(UserError, match="checksum"):
        fmnist.fetch(None, url, tmp_path / "cache")
    assert not (tmp_path / "cache" / fmnist.FILES["test_labels"]).exists()


def test_download_unreachable_url_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="cannot download"):
        fmnist.fetch(str(tmp_path / "nowhere"), "http://127.0.0.1:9", tmp_path / "cache", timeout=2)


def test_split_parts_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(10), 100)
    a = fmnist.split_parts(labels, 300, seed=0)
    assert (a == 0).sum() == 300
    assert np.bincount(labels[a == 0]).tolist() == [30] * 10
    assert np.array_equal(a, fmnist.split_parts(labels, 300, seed=0))
    assert not np.array_equal(a, fmnist.split_parts(labels, 300, seed=1))
    with pytest.raises(UserError, match="base_reserve"):
        fmnist.split_parts(labels, 0, seed=0)


@needs_debian
def test_download_stage_writes_npz_and_rejects_bad_params(tmp_path, monkeypatch, capsys):
    from stages import download

    monkeypatch.chdir(tmp_path)
    params = {"profile": "embedded", "data": {"source_dir": str(DEBIAN), "url": "http://127.0.0.1:9", "base_reserve": 30000, "seed": 0}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    download.main([])
    train = layout.load_split("data/raw/train.npz")
    assert train["images"].shape == (60000, 28, 28) and (train["part"] == 0).sum() == 30000
    params["data"]["base_reserve"] = -5
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as e:
        download.main([])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.base_reserve" in err[0]
