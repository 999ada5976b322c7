"""Remotes others can pull from: a real sshd on 127.0.0.1 (push + pull), a read-only HTTP mirror of the
pushed directory (pull; push refused), and the messages of a pull from an empty or unreachable remote.

A small throw-away git + DVC repository (one stage with a directory and a file output, one `dvc add`ed
file) is built and pushed once per module; every test pulls into its own fresh `git clone`."""
from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.project import DVC, GIT

SSHD = Path("/usr/sbin/sshd")
OUTS = ["out", "result.txt", "data.bin"]  # the stage's directory and file outputs, the `dvc add`ed file
STAGE = """\
import os
import random
import sys
r = random.Random(int(sys.argv[1]))
os.makedirs("out/sub", exist_ok=True)
for name in ("out/a.bin", "out/sub/b.bin"):
    open(name, "wb").write(r.randbytes(50_000))
open("result.txt", "w").write(f"{r.random()}\\n")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    """Until `port` accepts a connection; fail with the server's log if it exits or the time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{proc.args[0]} did not listen on 127.0.0.1:{port} in {timeout} s:\n{log.read_text()}")


def require_sshd(sshd: Path) -> None:
    """Fail (not skip: CI installs them through the Makefile) when sshd or ssh-keygen is missing."""
    if not sshd.exists() or not shutil.which("ssh-keygen"):
        pytest.fail(f"{sshd} or ssh-keygen is missing: run `make setup` (it installs openssh-server)")


def dvc_env(site: Path) -> dict[str, str]:
    """As tests/project.py: no analytics, a site cache of the test's own, this venv's tools first."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(site),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def dvc(d: Path, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    r = subprocess.run([DVC, *args], cwd=d, env={**dvc_env(d.parent / f".site-{d.name}"), **env},
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, f"dvc {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def git(d: Path, *args: str) -> None:
    subprocess.run(GIT + list(args), cwd=d, check=True, capture_output=True)


def files(d: Path) -> dict[str, bytes]:
    """Every output file under d, by its path relative to d."""
    found = {}
    for name in OUTS:
        p = d / name
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                found[str(f.relative_to(d))] = f.read_bytes()
    return found


def assert_clean(d: Path) -> None:
    r = dvc(d, "status", "--json")
    assert json.loads(r.stdout) == {}, r.stdout


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 that lets this user in with a temporary key only; (port, key, root dir)."""
    require_sshd(SSHD)
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    try:
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # sshd's privilege separation directory
    except OSError as e:
        pytest.fail(f"sshd needs /run/sshd ({e}): create it as root (`mkdir -p /run/sshd`)")
    port = free_port()
    (d / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
""")
    log = d / "sshd.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stdout=err, stderr=err)
    try:
        wait_port(port, proc, log)
        yield port, d / "client_key", d
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def origin(sshd, tmp_path_factory):
    """The repository, reproduced and pushed to its default remote `ssh` (the sshd above, committed URL,
    key in .dvc/config.local); also has the remotes `empty` (nothing pushed) and `down` (no server)."""
    port, key, sshd_dir = sshd
    user = getpass.getuser()
    d = tmp_path_factory.mktemp("work") / "origin"
    d.mkdir()
    git(d, "init", "-q")
    dvc(d, "init", "-q")
    (d / "stage.py").write_text(STAGE)
    (d / "dvc.yaml").write_text("stages:\n  make:\n    cmd: python stage.py 7\n    deps: [stage.py]\n"
                                "    outs: [out, result.txt]\n")
    (d / "data.bin").write_bytes(os.urandom(100_000))
    dvc(d, "add", "-q", "data.bin")
    dvc(d, "repro", "-q")
    remote = sshd_dir / "remote"
    # No known_hosts needed: DVC's SSH filesystem (sshfs) connects with asyncssh's known_hosts=None, which
    # accepts any host key (the key-less pull below, with a wrong key in known_hosts, gets as far as auth).
    dvc(d, "remote", "add", "-d", "ssh", f"ssh://{user}@127.0.0.1:{port}{remote}")
    dvc(d, "remote", "modify", "--local", "ssh", "keyfile", str(key))
    dvc(d, "remote", "add", "empty", f"ssh://127.0.0.1{sshd_dir / 'empty'}")  # user, port: in config.local
    dvc(d, "remote", "add", "down", f"ssh://{user}@127.0.0.1:{free_port()}/srv/nothing")
    git(d, "add", "-A")
    git(d, "commit", "-qm", "init")
    dvc(d, "push", "-q")
    assert (remote / "files" / "md5").is_dir()
    return d, key, remote


def clone(origin: Path, tmp_path: Path, name: str = "clone") -> Path:
    dst = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(origin), str(dst)], check=True, capture_output=True)
    assert not any((dst / o).exists() for o in OUTS)
    return dst


def test_ssh_push_then_fresh_clone_pulls_identical_outputs(origin, tmp_path):
    d, key, _ = origin
    c = clone(d, tmp_path)
    dvc(c, "remote", "modify", "--local", "ssh", "keyfile", str(key))  # .dvc/config.local is not cloned
    dvc(c, "pull")
    assert files(c) == files(d) and len(files(d)) == 4
    assert_clean(c)


def test_http_mirror_of_pushed_remote_pulls_but_refuses_push(origin, tmp_path):
    d, _, remote = origin
    port = free_port()
    log = tmp_path / "http.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                                 "--directory", str(remote)], stdout=err, stderr=err)
    try:
        wait_port(port, proc, log)
        before = sorted(remote.rglob("*"))
        c = clone(d, tmp_path)
        dvc(c, "remote", "add", "--local", "-d", "mirror", f"http://127.0.0.1:{port}")
        dvc(c, "pull")
        assert files(c) == files(d)
        assert_clean(c)
        (c / "data.bin").write_bytes(b"a change to share")
        dvc(c, "add", "-q", "data.bin")
        r = dvc(c, "push", ok=False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert r.returncode == 1  # http.server has no POST, DVC's upload method: the mirror stays read-only
    assert "Unsupported method ('POST')" in r.stderr and "failed to push data to the cloud" in r.stderr, r.stderr
    assert sorted(remote.rglob("*")) == before


def test_pull_without_key_from_empty_or_unreachable_remote_fails_clearly(sshd, origin, tmp_path):
    d, key, _ = origin
    c = clone(d, tmp_path)
    home = tmp_path / "home"  # no key of the user's is tried (nor its passphrase asked); a wrong host key
    (home / ".ssh").mkdir(parents=True)
    port = sshd[0]
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {(key.parent / 'client_key.pub').read_text()}")
    r = dvc(c, "pull", ok=False, HOME=str(home))  # the clone's .dvc/config.local has no keyfile yet
    assert r.returncode == 1
    assert "failed to connect to ssh" in r.stderr and "Permission denied for user" in r.stderr, r.stderr
    for option, value in (("user", getpass.getuser()), ("port", str(port)), ("keyfile", str(key))):
        dvc(c, "remote", "modify", "--local", "empty", option, value)
    r = dvc(c, "pull", "-r", "empty", ok=False)  # DVC also prints "Everything is up to date." on stdout here
    assert r.returncode == 1
    assert "Missing cache files" in r.stderr and "failed to pull data from the cloud" in r.stderr, r.stderr
    r = dvc(c, "pull", "-r", "down", ok=False)
    assert r.returncode == 1
    assert "failed to connect to ssh" in r.stderr and "Connect call failed" in r.stderr, r.stderr
    assert not any((c / o).exists() for o in OUTS)


def test_missing_sshd_fails_and_says_to_run_make_setup(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="run `make setup`"):
        require_sshd(tmp_path / "sshd")
