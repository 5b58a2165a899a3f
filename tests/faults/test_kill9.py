"""kill -9 in the middle of a local write and of ``encrypt-tree``, ``migrate`` and ``rewrap -r``
(run as real subprocesses, killed at a seeded point): every file is its old self or its whole
new self, never partial; a re-run finishes the job and leaves no temp file behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest

import envcrypt
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._sinks import TEMP_PREFIX
from envcrypt.keys.vault import LocalVault

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("ENVCRYPT_FAULT_SEED", "11"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*")]


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 60) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            return True
        time.sleep(0.002)
    proc.kill()
    raise TimeoutError("the subprocess neither reached the kill point nor ended")


def _cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "envcrypt", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "envcrypt", *args], cwd=REPO, env=_env(),
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()


def _payload(i: int, size: int) -> bytes:
    return random.Random(SEED * 1000 + i).randbytes(size)


def _fs() -> EnvcryptFileSystem:
    return EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k", skip_instance_cache=True)


WRITER = """
import sys, time, fsspec
import envcrypt.fs._sinks as sinks
from envcrypt.fs import EnvcryptFileSystem
if sys.argv[3] == "named":  # as on a system without O_TMPFILE: a named, flock'ed temp file
    sinks._unnamed_file = lambda directory: None
fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k", skip_instance_cache=True)
with fs.open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        f.write(bytes([i % 251]) * 65536)
        f.flush()
        print(i, flush=True)
        time.sleep(0.002)
"""


@pytest.mark.parametrize("temp", ["unnamed", "named"])
def test_kill9_in_the_middle_of_a_local_write(tmp_path: Path, temp: str) -> None:
    LocalVault().create_key("k")
    target = tmp_path / "data" / "obj.bin"
    target.parent.mkdir()
    old = b"the old object, whole" * 1000
    _fs().pipe_file(str(target), old)
    cut = random.Random(SEED).randrange(2, 40)  # kill after this many 64 KiB writes
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), "400", temp], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= cut:
            os.kill(proc.pid, signal.SIGKILL)
            break
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert _fs().cat_file(str(target)) == old  # the old object, whole
    # an unnamed (O_TMPFILE) temp file dies with its writer; a named one stays, hidden from listings
    assert len(_temps(target.parent)) == (0 if temp == "unnamed" else 1)
    assert _fs().ls(str(target.parent), detail=False) == [str(target)]
    rerun = subprocess.run([sys.executable, "-c", WRITER, str(target), "40", temp], cwd=REPO, env=_env(),
                           timeout=60, stdout=subprocess.DEVNULL)
    assert rerun.returncode == 0
    assert _fs().cat_file(str(target)) == b"".join(bytes([i % 251]) * 65536 for i in range(40))
    assert _temps(target.parent) == []  # the re-run removed the dead writer's temp file


def test_a_live_writers_temp_file_is_never_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from envcrypt.fs import _sinks

    LocalVault().create_key("k")
    monkeypatch.setattr(_sinks, "_unnamed_file", lambda directory: None)
    f = _fs().open(str(tmp_path / "live.bin"), "wb")
    f.write(b"still being written" * 1000)
    f.flush()
    assert len(_temps(tmp_path)) == 1
    assert _sinks.sweep_stale_temps(str(tmp_path)) == []  # locked by its (live) writer
    f.close()
    assert _fs().cat_file(str(tmp_path / "live.bin")) == b"still being written" * 1000
    assert _temps(tmp_path) == []


N_FILES, FILE_SIZE = 80, 256 * 1024


def _tree(root: Path) -> dict[str, bytes]:
    files = {f"d{i % 4}/f{i:03d}.bin": _payload(i, FILE_SIZE + i) for i in range(N_FILES)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _nth_kill_point(low: int = 3, high: int = 30) -> int:
    return random.Random(SEED + 7).randrange(low, high)


def test_kill9_in_the_middle_of_encrypt_tree(tmp_path: Path) -> None:
    LocalVault().create_key("k")
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src)
    args = ("encrypt-tree", str(src), str(dst), "--key", "local:k", "--workers", "2", "--no-progress")
    n = _nth_kill_point()
    proc = _cli(*args)
    assert _kill_when(proc, lambda: len([p for p in dst.rglob("*.bin") if p.is_file()]) >= n)
    fs = _fs()
    present = [p for p in dst.rglob("*.bin")]
    assert n <= len(present) < N_FILES
    for p in present:  # every published file is whole
        assert fs.cat_file(str(p)) == files[str(p.relative_to(dst))]
    _finish(*args)
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*.bin")) == sorted(files)
    assert all(fs.cat_file(str(dst / rel)) == data for rel, data in files.items())
    assert _temps(dst) == []


def test_kill9_in_the_middle_of_migrate(tmp_path: Path) -> None:
    LocalVault().create_key("k")
    root = tmp_path / "lake"
    files = _tree(root)
    args = ("migrate", str(root), "--key", "local:k", "--workers", "2", "--no-progress")

    def encrypted() -> list[Path]:
        out = []
        for p in root.rglob("*.bin"):
            with open(p, "rb") as f:
                if f.read(8) == b"ENVCRYPT":
                    out.append(p)
        return out

    n = _nth_kill_point()
    assert _kill_when(_cli(*args), lambda: len(encrypted()) >= n)
    fs = _fs()
    done = encrypted()
    assert n <= len(done) < N_FILES
    for rel, data in files.items():  # each file is its plaintext self or its whole encrypted self
        p = root / rel
        assert (fs.cat_file(str(p)) if p in done else p.read_bytes()) == data
    _finish(*args)
    assert len(encrypted()) == N_FILES
    assert all(fs.cat_file(str(root / rel)) == data for rel, data in files.items())
    assert _temps(root) == []


def test_kill9_in_the_middle_of_rewrap(tmp_path: Path) -> None:
    vault = LocalVault()
    vault.create_key("k")
    root = tmp_path / "lake"
    fs = _fs()
    files = {f"d{i % 4}/f{i:03d}.bin": _payload(i, FILE_SIZE + i) for i in range(N_FILES)}
    for rel, data in files.items():
        fs.pipe_file(str(root / rel), data)  # pipe_file creates parents on local targets
    vault.rotate_key("k")
    args = ("rewrap", str(root), "--to", "local:k", "-r", "--workers", "2", "--no-progress")

    def rewrapped() -> list[Path]:
        return [p for p in root.rglob("*.bin") if envcrypt.inspect(p.read_bytes()[:4096]).key_uris != ["local:k/1"]]

    n = _nth_kill_point()
    assert _kill_when(_cli(*args), lambda: len(rewrapped()) >= n)
    assert n <= len(rewrapped()) < N_FILES
    assert all(_fs().cat_file(str(root / rel)) == data for rel, data in files.items())  # old or new: whole
    _finish(*args)
    assert len(rewrapped()) == N_FILES
    assert all(_fs().cat_file(str(root / rel)) == data for rel, data in files.items())
    assert _temps(root) == []


SPOOLED = """
import sys, time, fsspec
from envcrypt.fs import EnvcryptFileSystem
fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k", skip_instance_cache=True)
with fs.open(sys.argv[1], "wb", spool=True) as f:
    for i in range(400):
        f.write(b"PLAINTEXT-" * 6553)
        f.flush()
        print(i, flush=True)
        time.sleep(0.002)
"""


def test_kill9_of_a_spooled_write_leaves_no_plaintext(tmp_path: Path) -> None:
    """A spooled writer (clients that seek back, as h5py) keeps plaintext in a local temp file
    until close: killed with SIGKILL, it leaves none of it (an O_TMPFILE has no name)."""
    LocalVault().create_key("k")
    spool_tmp = tmp_path / "tmp"
    spool_tmp.mkdir()
    env = dict(_env(), TMPDIR=str(spool_tmp))
    proc = subprocess.Popen([sys.executable, "-c", SPOOLED, str(tmp_path / "h.bin")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            break
    assert proc.wait(timeout=30) == -signal.SIGKILL
    left = [p for p in spool_tmp.rglob("*") if p.is_file()]
    assert left == []  # the spool directory may stay (0700, empty), never the plaintext
    assert not (tmp_path / "h.bin").exists()
