"""``envcrypt mount URL MOUNTPOINT`` and ``envcrypt unmount MOUNTPOINT``: envcrypt data as a plaintext directory.

The mount takes the options of the file commands (``-o`` keyed by protocol,
``--key``, ``--trusted-key``/``--trust``, ``--vault``, ``--plaintext``); the key policy
and trusted keys come from the envcrypt layer of ``-o`` as for ``EnvcryptFileSystem``.
In the foreground it serves until Ctrl-C or ``envcrypt unmount``; ``--background``
starts the same command as a detached process, waits until the mount is up,
writes its pid file and returns.  ``envcrypt unmount`` unmounts and waits for
that process to end (every pending publication done).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from ..fs.urls import encrypted_fs
from ._location import STORAGE_OPTIONS_HELP, parse_storage_options

START_TIMEOUT = 30.0  # seconds --background waits for the mount to come up
STOP_TIMEOUT = 30.0  # seconds unmount waits for the mount process to end


def _state_file(mountpoint: str, suffix: str) -> str:
    digest = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"envcrypt-mount-{digest}.{suffix}")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "mount", help="show an envcrypt location as a plaintext directory (FUSE)",
        description="Mount URL (envcrypt:: implied; a bare path is local) at MOUNTPOINT: programs read and "
                    "write plaintext, only ciphertext is stored.",
        epilog="example:\n  envcrypt mount s3://lake/raw /mnt/raw --background\n  envcrypt unmount /mnt/raw",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="fsspec URL or local directory (envcrypt:: is implied)")
    p.add_argument("mountpoint", help="an existing directory (what it holds is hidden while mounted)")
    p.add_argument("--read-only", action="store_true", help="refuse every write (mounted ro)")
    p.add_argument("--key", action="append", dest="keys", metavar="KEY_URI",
                   help="master key for new files (repeatable; default the path's key: key policy / local:default)")
    p.add_argument("--trusted-key", "--trust", action="append", dest="trust", metavar="KEY_URI",
                   help="a further key that reads accept (repeatable)")
    p.add_argument("-o", "--storage-options", default=None, metavar="JSON", help=STORAGE_OPTIONS_HELP)
    p.add_argument("--vault", metavar="DIR", help="local vault directory for local: keys (default $ENVCRYPT_VAULT)")
    p.add_argument("--plaintext", choices=("error", "allow"), default=None,
                   help="objects that are not envcrypt objects: error (default: EIO on read) or allow")
    p.add_argument("--spool-dir", metavar="DIR",
                   help="where files open for writing keep their plaintext (default: the system temp dir)")
    p.add_argument("--allow-other", action="store_true", help="let other users use the mount (FUSE allow_other)")
    p.add_argument("--background", action="store_true", help="detach; write a pid file; return once mounted")
    p.add_argument("--pid-file", metavar="PATH", help="pid file of --background (default: in the temp dir, "
                                                      "derived from MOUNTPOINT; envcrypt unmount finds it)")
    p.add_argument("--log", metavar="PATH", help="log file (default: stderr; with --background, a file "
                                                 "in the temp dir)")
    p.set_defaults(func=_mount)

    u = sub.add_parser("unmount", help="unmount an envcrypt mount and wait for its process to end",
                       description="Unmount MOUNTPOINT (fusermount3 -u, fusermount -u or umount) and wait until "
                                   "the mount process has published everything and exited.",
                       epilog="example:\n  envcrypt unmount /mnt/raw", formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("mountpoint", help="the mount point")
    u.add_argument("--lazy", action="store_true", help="detach now even while files are open (ends when closed)")
    u.add_argument("--pid-file", metavar="PATH", help="the pid file given to mount --background")
    u.add_argument("--timeout", type=float, default=STOP_TIMEOUT, help="seconds to wait for the process to end")
    u.set_defaults(func=_unmount)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options = parse_storage_options(args.storage_options)
    layer = options.setdefault("envcrypt", {})
    if args.trust:
        layer["trusted_keys"] = list(layer.get("trusted_keys") or []) + list(args.trust)
    if args.plaintext:
        layer["plaintext"] = args.plaintext
    if args.vault:
        layer["resolver_options"] = {**(layer.get("resolver_options") or {}), "vault": args.vault}
    return options


def _check_mountpoint(mountpoint: str) -> str:
    from ..mount import is_mounted

    path = os.path.realpath(mountpoint)
    if not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "the mount point must be an existing directory", mountpoint)
    if is_mounted(path):
        raise OSError(errno.EBUSY, "already mounted", mountpoint)
    return path


def _log_to(path: str | None, debug: bool) -> None:
    """The program's own logging (the CLI is the program): envcrypt.mount's lines to stderr or a file."""
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s envcrypt mount: %(levelname)s %(message)s"))
    logger = logging.getLogger("envcrypt.mount")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def _prefer_libfuse3() -> None:
    """This program's choice (not the library's): libfuse 3 where both are installed.

    The binding takes libfuse 2 first; libfuse 3 passes 1 MiB writes (libfuse 2:
    128 KiB), which makes sequential writes through the mount about 1.7x faster.
    """
    from ctypes.util import find_library

    if not ({"FUSE_LIBRARY_PATH", "FUSE_LIBRARY_NAME"} & set(os.environ)) and find_library("fuse3"):
        os.environ["FUSE_LIBRARY_NAME"] = "fuse3"


def _mount(args: argparse.Namespace) -> int:
    from ..mount import EnvcryptOperations, serve
    from ..mount.runner import load_binding

    mountpoint = _check_mountpoint(args.mountpoint)
    _prefer_libfuse3()
    load_binding()  # a missing binding or libfuse fails here, in the foreground
    fs, root = encrypted_fs(args.url, _options(args), key_uri=args.keys)
    if fs.isfile(root):
        raise NotADirectoryError(errno.ENOTDIR, "mount a directory or prefix, not one object", args.url)
    if isinstance(fs.target, LocalFileSystem) and not fs.isdir(root):
        raise FileNotFoundError(errno.ENOENT, "no such directory", args.url)  # (an object store prefix may be empty)
    if args.background:
        return _background(args, mountpoint)
    _log_to(args.log, bool(getattr(args, "debug", False)))
    ops = EnvcryptOperations(fs, root, read_only=args.read_only, spool_dir=args.spool_dir)
    serve(ops, mountpoint, read_only=args.read_only, allow_other=args.allow_other)
    return 0


def _child_argv(args: argparse.Namespace, mountpoint: str, log: str) -> list[str]:
    argv = [sys.executable, "-m", "envcrypt", "mount", args.url, mountpoint, "--log", log]
    for flag, name in (("--read-only", "read_only"), ("--allow-other", "allow_other")):
        if getattr(args, name):
            argv.append(flag)
    for flag, name in (("-o", "storage_options"), ("--vault", "vault"), ("--plaintext", "plaintext"),
                       ("--spool-dir", "spool_dir")):
        if getattr(args, name):
            argv += [flag, getattr(args, name)]
    for key in args.keys or []:
        argv += ["--key", key]
    for key in args.trust or []:
        argv += ["--trusted-key", key]
    return argv


def _background(args: argparse.Namespace, mountpoint: str) -> int:
    from ..mount import is_mounted

    log = os.path.abspath(args.log) if args.log else _state_file(mountpoint, "log")
    pid_file = args.pid_file or _state_file(mountpoint, "pid")
    with open(log, "ab") as out:
        child = subprocess.Popen(_child_argv(args, mountpoint, log), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=out, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT
    while not is_mounted(mountpoint):
        if child.poll() is not None:
            raise OSError(errno.EIO, f"the mount process exited ({child.returncode}); see {log}", args.mountpoint)
        if time.monotonic() >= deadline:
            child.kill()
            raise TimeoutError(errno.ETIMEDOUT, f"not mounted after {START_TIMEOUT:.0f} s; see {log}",
                               args.mountpoint)
        time.sleep(0.05)
    with open(pid_file, "w", encoding="utf-8") as f:
        f.write(f"{child.pid}\n")
    print(f"mounted {args.url} at {mountpoint} (pid {child.pid}, pid file {pid_file}, log {log})")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a child of ours that ended is a zombie until reaped: not alive
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def _unmount(args: argparse.Namespace) -> int:
    from ..mount import is_mounted, unmount
    from ..mount.runner import wait_unmounted

    mountpoint = os.path.realpath(args.mountpoint)
    pid_file = args.pid_file or _state_file(mountpoint, "pid")
    if not is_mounted(mountpoint):
        raise OSError(errno.EINVAL, "not a mounted envcrypt directory", args.mountpoint)
    unmount(mountpoint, lazy=args.lazy)
    if not args.lazy and not wait_unmounted(mountpoint, args.timeout):
        raise TimeoutError(errno.ETIMEDOUT, "still mounted", args.mountpoint)
    try:
        with open(pid_file, encoding="utf-8") as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0  # a foreground mount: its process ends by itself
    deadline = time.monotonic() + args.timeout
    while pid > 0 and _alive(pid):
        if time.monotonic() >= deadline:
            raise TimeoutError(errno.ETIMEDOUT, f"mount process {pid} still running", args.mountpoint)
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        os.unlink(pid_file)
    return 0
