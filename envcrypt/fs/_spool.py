"""The plaintext spool of a seekable writer: a private local temp file, sealed on close.

Clients such as h5py (and netCDF-4 through h5netcdf / xarray) seek back and
rewrite while they write, and read back what they wrote; an envcrypt object
is sealed chunk by chunk in order and cannot be rewritten.  A spooled writer
gives such a client an ordinary local file to work in — created ``0600`` in a
fresh ``0700`` directory of the system temp dir — and on a successful close
seals its contents into the writer's ``EncryptingWriter`` (the header, data
key and atomic sink of a normal write), so publication is the same single
step.  The spool is removed on close, on abort and, for a writer that is
never closed, when it is collected or the interpreter exits.

The spool holds plaintext on local disk while the file is open (as the client
would have written it without envcrypt); nothing of it outlives the file.  On Linux the
file is an unnamed ``O_TMPFILE``, so not even a writer killed with SIGKILL leaves its
plaintext behind (elsewhere it is a named file that such a kill leaves).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import weakref
from typing import Any

__all__ = ["Spool", "COPY_BUFFER", "private_file", "remove_private"]

COPY_BUFFER = 4 * 1024 * 1024  # bytes per read when sealing the spool


def _unnamed(directory: str) -> int | None:
    """An O_TMPFILE (Linux): plaintext with no name, so even a process killed with SIGKILL leaves
    none behind (only the empty 0700 directory); None where the OS or file system has none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return None
    try:
        return os.open(directory, flag | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        return None


def private_file(prefix: str, spool_dir: str | None = None) -> tuple[str, int]:
    """A fresh ``0700`` directory (``prefix*`` under ``spool_dir``, default the system temp dir)
    holding one new ``0600`` file, opened read/write: ``(directory, fd)``.  The file has no
    name where the OS allows (``O_TMPFILE``), so a process killed meanwhile leaves none."""
    directory = tempfile.mkdtemp(prefix=prefix, dir=spool_dir)  # mode 0700
    try:
        fd = _unnamed(directory)
        if fd is None:
            fd = os.open(os.path.join(directory, "plaintext"),
                         os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory, fd


def remove_private(file: io.BufferedRandom | int, directory: str) -> None:
    """Close the file of :func:`private_file` (an open file object or its descriptor) and remove
    its directory; safe to call again."""
    with contextlib.suppress(OSError):
        if isinstance(file, int):
            os.close(file)
        else:
            file.close()
    shutil.rmtree(directory, ignore_errors=True)


class Spool:
    """A private read/write temp file (``file``), removed by ``remove()`` or when collected."""

    def __init__(self) -> None:
        self.directory, fd = private_file("envcrypt-spool-")
        try:
            self.file: io.BufferedRandom = os.fdopen(fd, "w+b")
        except BaseException:
            remove_private(fd, self.directory)
            raise
        self._finalizer = weakref.finalize(self, remove_private, self.file, self.directory)

    def __repr__(self) -> str:
        return f"<Spool {self.directory!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("a spooled envcrypt writer cannot be pickled")

    def seal_into(self, writer: io.RawIOBase) -> None:
        """Copy the whole spool, from its start, into ``writer``."""
        self.file.flush()
        self.file.seek(0)
        shutil.copyfileobj(self.file, writer, COPY_BUFFER)

    def remove(self) -> None:
        self._finalizer()
