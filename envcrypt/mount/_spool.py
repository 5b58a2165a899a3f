"""The plaintext of a file open for writing on the mount: a private local temp file, published sealed.

A program on the mount writes anywhere in a file (sqlite rewrites pages, tar
and cp append), reads back what it wrote and truncates; an envcrypt object is
sealed chunk by chunk in order and replaced whole.  So while a file is open
for writing its plaintext lives in a ``Spool``: a ``0600`` file in a fresh
``0700`` directory (under ``spool_dir``, default the system temp dir), written
and read with positional I/O.  ``publish`` seals the whole spool through the
filesystem's ordinary writer (``fs.open(path, "wb")``), whose sink publishes
atomically: the stored object is the old one or the new one, never a part.
The spool is removed when the last handle of the file is released, when the
mount ends, and (for a mount process that dies) its directory holds nothing
but that plaintext, named ``envcrypt-mount-*``.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from ..fs._spool import private_file, remove_private

__all__ = ["Spool", "PUBLISH_BUFFER"]

PUBLISH_BUFFER = 4 * 1024 * 1024  # plaintext bytes per read when sealing a spool


class Spool:
    """A private temp file addressed by offset (``pread``/``pwrite``), removed by ``remove``."""

    def __init__(self, spool_dir: str | None = None) -> None:
        self.directory, self.fd = private_file("envcrypt-mount-", spool_dir)
        self._finalizer = weakref.finalize(self, remove_private, self.fd, self.directory)

    def __repr__(self) -> str:
        return f"<Spool {self.directory!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("a mount spool cannot be pickled")

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def pwrite(self, data: bytes, offset: int) -> int:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], offset + done)
        return done

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def truncate(self, length: int) -> None:
        os.ftruncate(self.fd, length)

    def fill_from(self, source: Any) -> None:
        """Copy a readable file object (the decrypted old object) into the spool, from its start."""
        offset = 0
        while True:
            block = source.read(PUBLISH_BUFFER)
            if not block:
                break
            offset += self.pwrite(block, offset)

    def seal_into(self, writer: Any) -> None:
        """Write the whole spool, from its start, into ``writer`` (an envcrypt writer)."""
        offset, size = 0, self.size()
        while offset < size:
            block = os.pread(self.fd, min(PUBLISH_BUFFER, size - offset), offset)
            if not block:
                break
            writer.write(block)
            offset += len(block)

    def remove(self) -> None:
        self._finalizer()
