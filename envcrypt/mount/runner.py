"""Running a mount (the FUSE loop, through ``mfusepy``) and ending one (``fusermount -u``).

``serve`` blocks until the mount ends: ``envcrypt unmount``, ``fusermount3 -u``
or, when it runs on the main thread of a program, Ctrl-C / SIGTERM (libfuse's
own handlers end the loop and unmount).  ``serve`` changes no interpreter-wide
setting of its own; the binding resets SIGINT to its default around the loop
only when called on the main thread, which is the program's business (the CLI
is such a program).  On a thread the loop runs without signal handlers.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from typing import Any

from ..errors import MissingDependencyError
from .operations import EnvcryptOperations

__all__ = ["serve", "unmount", "is_mounted", "load_binding"]

UNMOUNT_TIMEOUT = 10.0  # seconds a fusermount/umount call may take


def load_binding() -> Any:
    """The ``mfusepy`` module (libfuse 3 or 2 through ctypes), or a clear error naming what is missing."""
    try:
        import mfusepy
    except ImportError as exc:
        raise MissingDependencyError(
            "envcrypt mount needs the FUSE binding: pip install 'envcrypt[mount]'") from exc
    except OSError as exc:  # the binding loads libfuse when imported
        raise MissingDependencyError(
            f"envcrypt mount needs the system FUSE library ({exc}): apt-get install fuse3 "
            "(or libfuse2), and /dev/fuse") from exc
    return mfusepy


def serve(ops: EnvcryptOperations, mountpoint: str, *, read_only: bool = False, allow_other: bool = False,
          debug: bool = False) -> None:
    """Mount ``ops`` at ``mountpoint`` and serve requests until it is unmounted (multi-threaded loop)."""
    fuse = load_binding()
    ops._context = fuse.fuse_get_context
    options: dict[str, Any] = {
        "foreground": True, "nothreads": False, "debug": debug, "fsname": "envcrypt", "subtype": "envcrypt",
        "ro": read_only, "allow_other": allow_other,
        "hard_remove": True,  # unlink removes the object at once (no .fuse_hidden rename of open files)
    }
    if fuse.fuse_version_major == 2:
        # libfuse 3 does both by default; libfuse 2 would split writes into 4 KiB and turn
        # open(O_TRUNC) into a separate truncate that empties the stored object before the write
        options.update(big_writes=True, max_write=1024 * 1024, max_read=1024 * 1024, atomic_o_trunc=True)
    try:
        fuse.FUSE(ops, mountpoint, **{k: v for k, v in options.items() if v is not False})
    except RuntimeError as exc:  # the binding's "fuse_main returned N"
        if ops.served and not is_mounted(mountpoint):
            return  # libfuse 3 ends the loop with a non-zero status when a signal (Ctrl-C) unmounts it
        raise OSError(errno.EIO, f"FUSE could not mount (libfuse status {exc}); is /dev/fuse usable?",
                      mountpoint) from None


def is_mounted(mountpoint: str) -> bool:
    """Whether ``mountpoint`` is a FUSE mount of envcrypt (from /proc/self/mounts)."""
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[1].replace("\\040", " ") == target and "fuse" in fields[2]:
                    return True
    except OSError:
        return os.path.ismount(target)
    return False


def _unmount_commands(mountpoint: str, lazy: bool) -> list[list[str]]:
    commands = []
    for tool in ("fusermount3", "fusermount"):
        path = shutil.which(tool)
        if path:
            commands.append([path, "-u"] + (["-z"] if lazy else []) + [mountpoint])
    umount = shutil.which("umount")
    if umount:
        commands.append([umount] + (["-l"] if lazy else []) + [mountpoint])
    return commands


def unmount(mountpoint: str, *, lazy: bool = False, timeout: float = UNMOUNT_TIMEOUT) -> None:
    """Unmount ``mountpoint`` with the first tool that works (fusermount3, fusermount, umount).

    ``lazy`` detaches it even while programs still have files open there (the
    mount ends when they close them).  Raises ``OSError`` with the tools' last
    message when none could unmount it.
    """
    mountpoint = os.path.realpath(mountpoint)
    last = "no fusermount3, fusermount or umount on PATH"
    for command in _unmount_commands(mountpoint, lazy):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            last = str(exc)
            continue
        if done.returncode == 0:
            return
        last = (done.stderr or done.stdout).strip() or f"{command[0]} exited {done.returncode}"
        if not is_mounted(mountpoint):
            return
    raise OSError(16, f"cannot unmount: {last}", mountpoint)  # EBUSY, as the tools say


def wait_unmounted(mountpoint: str, timeout: float) -> bool:
    """Wait until ``mountpoint`` is no longer mounted; False at the timeout."""
    deadline = time.monotonic() + timeout
    while is_mounted(mountpoint):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
