"""Local file I/O of ``envcrypt encrypt|decrypt``: the input read sequentially, the output
published atomically and made durable.

:class:`Output` writes into a file with no name yet (Linux ``O_TMPFILE``, ``0600``, in the
destination's directory, so a process killed at any point leaves nothing behind).  Writes are
``os.write`` calls straight from the caller's buffer, and every :data:`WRITEBACK_STEP` bytes it
asks the kernel to start writing the finished range to disk (``sync_file_range(WRITE)``, which
does not wait), so the disk works while the rest is encrypted.  :meth:`Output.commit` then
makes the file durable with ``fsync`` -- the same call, and the same promise, as before: that
hint only moves the work earlier -- and gives it its name: ``link(2)`` when the name is free
(an atomic create), else a locked temporary name ``rename``\\ d over the old file.  Where the
OS or file system has no ``O_TMPFILE`` the file is a named, ``flock``\\ ed temp file from the
start (the name prefix the filesystem writers use, so their sweep removes it if this process
dies, never while it lives).  Until ``commit`` nothing is visible at the destination; on any
failure :meth:`Output.abort` removes what was written.

Only the standard library, loaded on the encrypt/decrypt start-up path (no ``tempfile``,
no ``shutil``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Callable
from typing import IO, Any

__all__ = ["TEMP_PREFIX", "WRITEBACK_STEP", "Output", "open_input", "regular_size", "write_all"]

#: temp-file names: the prefix of envcrypt.fs's local writers (``fs/_sinks.TEMP_PREFIX``; not
#: imported, that would load fsspec), so one sweep serves both and error messages hide both
TEMP_PREFIX = ".envcrypt-tmp-"
#: bytes written between two write-back hints; 8 MiB: early enough that the final fsync waits
#: for little, few enough calls (32 per 256 MiB) to cost nothing
WRITEBACK_STEP = 8 * 1024 * 1024

_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-out of dirty pages in the range, no wait


def _writeback_hint() -> Callable[[int, int, int], int] | None:
    """libc's ``sync_file_range(fd, offset, length, WRITE)`` as ``hint(fd, offset, length)``
    (Linux), else None; it returns the call's result.

    Python's ``os`` has no binding; ctypes looks it up once per run.  A failing call is
    ignored: it is only a hint, the fsync in :meth:`Output.commit` is what makes data durable.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, OSError, AttributeError):  # pragma: no cover - no ctypes or an odd libc
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def hint(fd: int, offset: int, length: int) -> int:
        return int(fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE))

    return hint


def open_input(path: str) -> IO[bytes]:
    """``path`` opened unbuffered (``readinto`` fills the caller's buffer with no staging copy),
    with the kernel told it is read once, front to back (a larger read-ahead window)."""
    src = open(path, "rb", buffering=0)
    with contextlib.suppress(OSError, AttributeError):  # a pipe or FIFO, or no posix_fadvise
        os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return src


def regular_size(fileobj: Any) -> int | None:
    """The size of ``fileobj`` when it is a regular file, else None (pipes, terminals ...)."""
    try:
        st = os.fstat(fileobj.fileno())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both of the first two
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def write_all(fd: int, data: memoryview) -> None:
    """``os.write`` until all of ``data`` is written (a pipe or a signal may take less)."""
    done, n = 0, len(data)
    while done < n:
        done += os.write(fd, data[done:])


class Output:
    """The output file of one run, invisible at ``path`` until :meth:`commit`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._dir = os.path.dirname(os.path.abspath(path))
        self._temp: str | None = None  # the file's temp name, None while it has none
        self._written = 0
        self._hinted = 0  # bytes handed to write-back so far
        self._hint: Callable[[int, int, int], int] | None = None
        try:
            fd = self._unnamed()
            if fd is None:
                fd, self._temp = self._named()
        except OSError as exc:  # name the output the user gave, never the temp file
            raise type(exc)(exc.errno, exc.strerror, path) from None
        self.fd = fd
        self._hint = _writeback_hint()

    def _unnamed(self) -> int | None:
        flag = getattr(os, "O_TMPFILE", 0)
        if not flag or not os.path.isdir("/proc/self/fd"):  # named through /proc at commit
            return None
        try:
            return os.open(self._dir, flag | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.EOPNOTSUPP, errno.EINVAL):
                return None  # kernel or file system without O_TMPFILE
            raise

    def _named(self) -> tuple[int, str]:
        import fcntl

        while True:
            name = os.path.join(self._dir, TEMP_PREFIX + os.urandom(6).hex())
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            with contextlib.suppress(OSError):  # no flock here: no sweeper can lock it either
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd, name

    def write(self, data: memoryview) -> None:
        write_all(self.fd, data)
        self._written += len(data)
        if self._hint is not None and self._written - self._hinted >= WRITEBACK_STEP:
            self._hint(self.fd, self._hinted, self._written - self._hinted)
            self._hinted = self._written

    def commit(self) -> None:
        """fsync, then give the file its name (atomically replacing what was there)."""
        os.fsync(self.fd)
        if self._temp is None:
            try:
                self._link(self.path)  # the name is free: one atomic create
            except FileExistsError:
                self._temp = self._link_temp()
        if self._temp is not None:
            os.replace(self._temp, self.path)
            self._temp = None
        self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1  # never closed twice: the number may belong to a new file
            os.close(fd)

    def _link(self, name: str) -> None:
        # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names the unnamed file (os.link follows
        # the /proc link only when given a directory fd)
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(str(self.fd), name, src_dir_fd=proc, follow_symlinks=True)
        finally:
            os.close(proc)

    def _link_temp(self) -> str:
        import fcntl

        with contextlib.suppress(OSError):  # locked before it has a name: a live writer's file
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        while True:
            name = os.path.join(self._dir, TEMP_PREFIX + os.urandom(6).hex())
            try:
                self._link(name)
            except FileExistsError:
                continue
            return name

    def abort(self) -> None:
        """Drop the file: an unnamed one vanishes with its descriptor; a named one is unlinked."""
        with contextlib.suppress(OSError):
            self._close()
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)
            self._temp = None
