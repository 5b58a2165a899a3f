"""Files of the vault directory: private modes, atomic writes, locks, canonical JSON.

Every vault file is 0600 in a 0700 directory owned by the user, never a symlink
(:func:`check_private`); writes go to a temporary file that is fsynced and renamed
(:func:`atomic_write`), so a file is only ever replaced whole and every write makes a
new inode.  A :data:`Stamp` is what ``lstat`` says about a file: the vault keeps what it
parsed from a file only while the file's stamp is unchanged (vault_index.py).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import VaultError

__all__ = ["default_vault_path", "b64e", "b64d", "check_private", "atomic_write", "read_private",
           "read_json", "canonical", "write_json", "flocked", "Stamp", "is_racy", "private_stamp", "checked_stamp",
           "stamp_of"]

#: a file changed less than this long ago may still change without its stamp changing
#: (timestamps are taken from a coarse clock: a rewrite in place within one tick, same size,
#: keeps mtime and ctime): what was read from it is not kept (git's "racily clean" rule)
RACY_NS = 1_000_000_000


def default_vault_path() -> Path:
    """``$ENVCRYPT_VAULT``, else ``$XDG_DATA_HOME/envcrypt/vault`` (``~/.local/share/...``)."""
    configured = os.environ.get("ENVCRYPT_VAULT")
    if configured:
        return Path(configured).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data_home) / "envcrypt" / "vault"


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: Any) -> bytes:
    if not isinstance(text, str):
        raise VaultError("corrupt base64 field in the vault")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise VaultError("corrupt base64 field in the vault") from None



_UID = os.getuid() if hasattr(os, "getuid") else None


def _check_stat(path: str | Path, st: os.stat_result, want_dir: bool) -> None:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise VaultError(f"refusing to use a symlink in the vault: {path}")
    if want_dir != stat.S_ISDIR(mode):
        raise VaultError(f"unexpected file type in the vault: {path}")
    if mode & 0o077:
        raise VaultError(f"insecure permissions on {path} (must not be group/other accessible)")
    if _UID is not None and st.st_uid != _UID:
        raise VaultError(f"{path} is owned by another user")


def check_private(path: str | Path, want_dir: bool) -> None:
    """Refuse symlinks, wrong file types and group/other permissions."""
    _check_stat(path, os.lstat(path), want_dir)


#: what ``lstat`` says about a file, enough to tell that it may have changed: (dev, inode,
#: size, mtime_ns, ctime_ns, mode, uid).  Every vault write renames a new file in (new
#: inode, new ctime), and nobody but the kernel sets ctime, so content put back in place
#: with its old size and mtime still changes the stamp.  A plain tuple: built per use.
Stamp = tuple[int, int, int, int, int, int, int]


def is_racy(stamp: Stamp) -> bool:
    """Changed too recently for the stamp to prove that the content did not change since."""
    return time.time_ns() - max(stamp[3], stamp[4]) < RACY_NS


def private_stamp(path: str | Path, want_dir: bool = False) -> Stamp:
    """The stamp of a vault file after :func:`check_private`'s checks; FileNotFoundError when missing."""
    st = os.lstat(path)
    _check_stat(path, st, want_dir)
    return _stamp(st)


def checked_stamp(path: str | Path, st: os.stat_result, want_dir: bool = False) -> Stamp:
    """:func:`private_stamp` of an ``lstat`` result already taken."""
    _check_stat(path, st, want_dir)
    return _stamp(st)


def stamp_of(st: os.stat_result) -> Stamp:
    """The stamp of an ``lstat`` result, unchecked: equal to a stamp :func:`private_stamp` gave
    only if the file kept the type, mode and owner that passed the checks then."""
    return _stamp(st)


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync dir), mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private(path: Path, seen: list[Stamp] | None = None) -> bytes:
    """Read a vault file after checking it; FileNotFoundError when missing.  ``seen`` gets the
    stamp of the file actually read (``fstat`` of the open descriptor): a stamp taken of the
    path before the read proves what was read only when the two are equal (a directory
    swapped in between and back again shows as another inode)."""
    check_private(path, want_dir=False)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if seen is not None:
            seen.append(_stamp(os.fstat(fd)))
        return f.read()


def read_json(path: Path, seen: list[Stamp] | None = None) -> dict[str, Any]:
    try:
        value = json.loads(read_private(path, seen))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # bytes json cannot decode, too deep
        raise VaultError(f"corrupt vault file: {path.name}") from None
    if not isinstance(value, dict):
        raise VaultError(f"corrupt vault file: {path.name}")
    try:  # "\ud800" escapes decode to lone surrogates, which no later encode() accepts
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise VaultError(f"corrupt vault file: {path.name}") from None
    return value


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical(value: Any) -> bytes:
    """The canonical JSON every MAC in the vault is computed over (sorted keys, no spaces, ASCII)."""
    return _CANONICAL.encode(value).encode()


def write_json(path: Path, value: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(value, indent=1, sort_keys=True).encode())


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created 0600); safe across processes and threads."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
