"""The file I/O of ``envcrypt encrypt|decrypt``: the output published atomically from an
unnamed file (nothing left by a failure or a kill -9, an old file intact), the write-back
hints, and the quick exit (the vault's audit lines still committed)."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import envcrypt
from envcrypt.cli import _files, main
from envcrypt.cli._files import TEMP_PREFIX, WRITEBACK_STEP, Output
from envcrypt.keys.vault import LocalVault

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------- Output


def test_output_appears_only_at_commit_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "out"
    out = Output(str(path))
    out.write(memoryview(b"sealed bytes"))
    assert _entries(tmp_path) == []  # no name at all while it is written
    out.commit()
    assert path.read_bytes() == b"sealed bytes"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _entries(tmp_path) == ["out"]


def test_output_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"old")
    out = Output(str(path))
    out.write(memoryview(b"new" * 1000))
    assert path.read_bytes() == b"old"
    out.commit()
    assert path.read_bytes() == b"new" * 1000
    assert _entries(tmp_path) == ["out"]


def test_aborted_output_leaves_the_old_file_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"old")
    out = Output(str(path))
    out.write(memoryview(b"partial"))
    out.abort()
    out.abort()  # safe twice: the descriptor number is never closed again
    assert path.read_bytes() == b"old"
    assert _entries(tmp_path) == ["out"]


def test_without_o_tmpfile_the_temp_file_is_locked_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the OS or file system has no O_TMPFILE: a named temp file, flocked (the fs sweep
    never removes a live one), renamed at commit, unlinked at abort."""
    monkeypatch.setattr(Output, "_unnamed", lambda self: None)
    for finish in ("commit", "abort"):
        path = tmp_path / finish
        out = Output(str(path))
        out.write(memoryview(b"data"))
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
        assert len(temps) == 1
        fd = os.open(temps[0], os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # what the sweeper of envcrypt.fs tries first
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        getattr(out, finish)()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert (tmp_path / "commit").read_bytes() == b"data"
    assert not (tmp_path / "abort").exists()


def test_write_back_is_started_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(_files, "_writeback_hint", lambda: lambda fd, offset, length: calls.append((offset, length)))
    out = Output(str(tmp_path / "out"))
    piece = memoryview(bytes(MiB))
    for _ in range(2 * WRITEBACK_STEP // MiB + 3):
        out.write(piece)
    out.commit()
    assert calls == [(0, WRITEBACK_STEP), (WRITEBACK_STEP, WRITEBACK_STEP)]
    assert (tmp_path / "out").stat().st_size == 2 * WRITEBACK_STEP + 3 * MiB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_write_back_hint_is_libc_sync_file_range(tmp_path: Path) -> None:
    hint = _files._writeback_hint()
    assert hint is not None
    with open(tmp_path / "f", "wb") as f:
        f.write(b"x" * 100_000)
        f.flush()
        assert hint(f.fileno(), 0, 100_000) == 0
    read_end, write_end = os.pipe()
    try:
        assert hint(read_end, 0, 1) == -1  # ESPIPE: it really reached the system call
    finally:
        os.close(read_end)
        os.close(write_end)


def test_an_unwritable_output_directory_names_the_output(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        Output(str(tmp_path / "missing" / "out"))
    assert exc.value.filename == str(tmp_path / "missing" / "out")


# ---------------------------------------------------------------- the commands


def _seal(tmp_path: Path, size: int) -> tuple[bytes, Path]:
    data = os.urandom(size)
    (tmp_path / "plain").write_bytes(data)
    assert main(["encrypt", str(tmp_path / "plain"), str(tmp_path / "sealed")]) == 0
    return data, tmp_path / "sealed"


@pytest.mark.parametrize("where", ["middle", "final", "truncated"])
def test_a_tampered_large_object_publishes_nothing_and_keeps_the_old_output(
        tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad chunk anywhere in an object of many buffers -> exit 2, the old output intact, no
    temp file (the plaintext before the bad chunk went only to the unnamed file)."""
    data, sealed = _seal(tmp_path, 5 * MiB + 123)
    blob = bytearray(sealed.read_bytes())
    if where == "middle":
        blob[len(blob) // 2] ^= 1
    elif where == "final":
        blob[-5] ^= 1
    else:
        del blob[-envcrypt.CHUNK_SIZE:]
    sealed.write_bytes(bytes(blob))
    out = tmp_path / "out"
    out.write_bytes(b"previous contents")
    assert main(["decrypt", str(sealed), str(out)]) == 2
    assert "IntegrityError" in capsys.readouterr().err
    assert out.read_bytes() == b"previous contents"
    assert _entries(tmp_path) == ["out", "plain", "sealed", "vault"]


def test_large_round_trip_through_the_program(tmp_path: Path) -> None:
    """``python -m envcrypt`` (quick exit) on a file of many buffers and a ragged end."""
    data = os.urandom(6 * MiB + 4321)
    (tmp_path / "plain").write_bytes(data)
    for args in (["encrypt", "plain", "sealed"], ["decrypt", "sealed", "back"]):
        subprocess.run([sys.executable, "-m", "envcrypt", *args], cwd=tmp_path, env=_env(), check=True, timeout=60)
    assert (tmp_path / "back").read_bytes() == data
    assert envcrypt.decrypt((tmp_path / "sealed").read_bytes()) == data


def test_the_quick_exit_still_commits_the_audit_lines(tmp_path: Path) -> None:
    """The program leaves with os._exit after a clean encrypt/decrypt; the key uses queued in
    the vault's audit log are committed first (atexit), and the chain verifies."""
    (tmp_path / "plain").write_bytes(b"x" * 1000)
    for args in (["encrypt", "plain", "sealed"], ["decrypt", "sealed", "back"]):
        subprocess.run([sys.executable, "-m", "envcrypt", *args], cwd=tmp_path, env=_env(), check=True, timeout=60)
    vault = LocalVault()
    ops = [e["op"] for e in vault.audit.entries()]
    assert "wrapKey" in ops and ops[-1] == "unwrapKey"
    assert vault.audit.verify().ok


def test_a_failing_program_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "sealed").write_bytes(b"ENVCRYPT" + b"\0" * 100)
    proc = subprocess.run([sys.executable, "-m", "envcrypt", "decrypt", "sealed", "back"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "sealed" in proc.stderr
    assert _entries(tmp_path) == ["sealed"]


def _kill_when_written(proc: subprocess.Popen[bytes], directory: Path, at_least: int) -> None:
    """SIGKILL ``proc`` once one of its open files in ``directory`` holds ``at_least`` bytes."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("the CLI ended before the kill point")
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            link = f"/proc/{proc.pid}/fd/{fd}"
            try:
                if os.readlink(link).startswith(str(directory)) and os.stat(link).st_size >= at_least:
                    os.kill(proc.pid, signal.SIGKILL)
                    assert proc.wait(timeout=30) == -signal.SIGKILL
                    return
            except OSError:
                continue
        time.sleep(0.005)
    proc.kill()
    raise TimeoutError("the CLI never wrote enough")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_kill9_mid_write_leaves_nothing(tmp_path: Path, command: str) -> None:
    """Killed while its output is half written (input from a pipe that stops short), the CLI
    leaves no file at all: the output has no name until it is complete (O_TMPFILE)."""
    data = os.urandom(4 * MiB)
    payload = envcrypt.encrypt(data) if command == "decrypt" else data
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "envcrypt", command, "-", str(work / "out")], env=_env(),
                            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(payload[: 3 * MiB])
    proc.stdin.flush()
    try:
        _kill_when_written(proc, work, MiB)
    finally:
        proc.stdin.close()
    assert _entries(work) == []
