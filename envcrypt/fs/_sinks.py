"""Atomic sinks: where a writer's bytes go until the object is published in one step.

A sink has a write-only ``raw`` stream, ``commit()`` (publish: the object
appears at the path, whole) and ``abort()`` (nothing appears; an object that
was there before stays untouched).

- local files: a temp file in the same directory, fsync, ``os.replace``, fsync
  of the directory;
- memory: a ``MemoryFile`` put into the store on commit;
- s3 / gcs / azure: the target's own buffered file (one PUT for small objects,
  a multipart / block upload otherwise) closed on commit, discarded on abort
  (multipart aborted, staged blocks never committed);
- anything else: a local temp file uploaded with ``put_file`` on commit.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Any, Protocol

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

__all__ = ["Sink", "open_sink", "uses_buffered_sink", "TEMP_PREFIX"]

TEMP_PREFIX = ".envcrypt-tmp-"
_BUFFERED_PROTOCOLS = frozenset({"s3", "s3a", "gcs", "gs", "abfs", "abfss", "az", "adl"})


class Sink(Protocol):
    raw: IO[bytes]

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class LocalSink:
    def __init__(self, target: LocalFileSystem, path: str) -> None:
        self.path = path
        directory = os.path.dirname(path) or "."
        if getattr(target, "auto_mkdir", False):
            os.makedirs(directory, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(path)
        fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
        self.raw: IO[bytes] = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            self.raw.flush()
            os.fsync(self.raw.fileno())
            self.raw.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


class MemorySink:
    def __init__(self, target: MemoryFileSystem, path: str) -> None:
        if path in target.pseudo_dirs:
            raise IsADirectoryError(path)
        parent = path
        while len(parent) > 1:
            parent = target._parent(parent)
            if target.isfile(parent):
                raise FileExistsError(parent)
        self._target = target
        self.raw: IO[bytes] = MemoryFile(target, path)

    def commit(self) -> None:
        self.raw.seek(0)
        self.raw.commit()  # type: ignore[attr-defined]

    def abort(self) -> None:
        self.raw = MemoryFile()


class BufferedFileSink:
    """The target's own AbstractBufferedFile: it publishes only when closed with a final flush."""

    def __init__(self, target: Any, path: str, block_size: int | None = None) -> None:
        kwargs = {"block_size": block_size} if block_size else {}
        self.raw: IO[bytes] = target.open(path, "wb", **kwargs)

    def commit(self) -> None:
        self.raw.close()

    def abort(self) -> None:
        f: Any = self.raw
        f.forced = True  # close() must not flush (and so commit) what was buffered
        try:
            f.discard()  # aborts a started multipart upload
        finally:
            f.close()


class SpoolSink:
    """A local temp file uploaded with ``put_file`` on commit."""

    def __init__(self, target: Any, path: str) -> None:
        self._target, self._path = target, path
        fd, self._tmp = tempfile.mkstemp(prefix=TEMP_PREFIX)
        self.raw: IO[bytes] = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            self.raw.close()
            self._target.put_file(self._tmp, self._path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


def uses_buffered_sink(target: Any) -> bool:
    """Whether ``target`` is an object store whose own buffered files publish atomically."""
    protocols = target.protocol if isinstance(target.protocol, (tuple, list)) else (target.protocol,)
    return bool(_BUFFERED_PROTOCOLS.intersection(protocols))


def open_sink(target: Any, path: str, *, block_size: int | None = None) -> Sink:
    """The atomic sink for ``path`` on ``target``."""
    if isinstance(target, LocalFileSystem):
        return LocalSink(target, path)
    if isinstance(target, MemoryFileSystem):
        return MemorySink(target, path)
    if uses_buffered_sink(target):
        return BufferedFileSink(target, path, block_size)
    return SpoolSink(target, path)
