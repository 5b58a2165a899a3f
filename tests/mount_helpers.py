"""Helpers of the mount tests: a real ``envcrypt mount`` process, started and always ended.

Each mount is the CLI in its own process (``python -m envcrypt mount URL DIR`` in
the foreground), so a hung FUSE loop can be killed and force-unmounted without
hanging the test run: every wait has a timeout, and teardown falls back from
``envcrypt unmount`` to ``kill -9`` plus ``fusermount3 -uz``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
START_SECONDS = 30.0
STOP_SECONDS = 20.0


def fuse_missing() -> str | None:
    """Why FUSE mounts cannot run here, or None when they can."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if not any(shutil.which(t) for t in ("fusermount3", "fusermount", "umount")):
        return "no fusermount3, fusermount or umount"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "mfusepy is not installed (pip install 'envcrypt[mount]')"
    except OSError as exc:
        return f"the system FUSE library is missing ({exc}): apt-get install fuse3"
    return None


needs_fuse = pytest.mark.skipif(fuse_missing() is not None, reason=str(fuse_missing()))


def env_for(vault: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["ENVCRYPT_VAULT"] = str(vault)
    env.update(extra)
    return env


def envcrypt(*argv: str, env: dict[str, str], timeout: float = 60.0, check: bool = True) -> Any:
    done = subprocess.run([sys.executable, "-m", "envcrypt", *argv], env=env, capture_output=True,
                          timeout=timeout, check=False, cwd=REPO)
    if check and done.returncode != 0:
        raise AssertionError(f"envcrypt {' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    return done


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 2)


def force_unmount(path: Path) -> None:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool) and is_mounted(path):
            subprocess.run([tool, "-uz", str(path)], capture_output=True, timeout=STOP_SECONDS, check=False)
    if is_mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=STOP_SECONDS, check=False)


class Mount:
    """``envcrypt mount URL MOUNTPOINT ARGS...`` in the foreground, in its own process."""

    def __init__(self, url: str, mountpoint: Path, env: dict[str, str], *args: str) -> None:
        self.url, self.path, self.env, self.args = url, mountpoint, env, args
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.log = mountpoint.parent / f"{mountpoint.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Mount:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "envcrypt", "mount", self.url, str(self.path), *self.args],
                env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                start_new_session=True)
        deadline = time.monotonic() + START_SECONDS
        while not is_mounted(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mount did not come up: {self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """kill -9 the mount process (a crash), then clear the dead mount."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_SECONDS)
        force_unmount(self.path)

    def stop(self) -> None:
        """``envcrypt unmount``; a mount that does not end is killed and force-unmounted."""
        try:
            if is_mounted(self.path):
                envcrypt("unmount", str(self.path), env=self.env, timeout=STOP_SECONDS, check=False)
            if self.proc is not None:
                self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if self.proc is not None and self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_SECONDS)
            force_unmount(self.path)


def run(*argv: str, cwd: Path | None = None, timeout: float = 60.0, input: bytes | None = None) -> bytes:
    """A real program, checked; its stdout."""
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, timeout=timeout, check=False, input=input)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    return done.stdout
