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

Conditional replacement (``expect=``, from ``version_of``): the sink commits
only if the object at the path is still the version seen before the rewrite
began, else it aborts with ``ConcurrentModificationError``.  On S3 this is
exact (``If-Match`` on the PUT / CompleteMultipartUpload, checked by the
store).  On local disks the file's (inode, size, mtime, ctime) is compared
just before ``os.replace``: a write landing between that check and the
rename (microseconds) is still lost, as POSIX has no conditional rename, and
so is a same-size in-place rewrite (``r+b``, not a rename) that lands within
the file system's timestamp granularity (a few ms on Linux) of the state
that was checked.  In
memory the check and the swap happen under the GIL.  Other targets have no
condition (``version_of`` returns None): a concurrent write during a rewrap
can be lost there.

Exclusive create (``exclusive=True``: ``fs.open(p, "xb")``): the object is published only
if nothing is at the path, else ``ObjectExistsError`` and the other writer's object stays.
Exact on local disks (``os.link`` of the sealed temp file fails if the name exists), in
memory (checked and stored under the GIL) and on S3 (``If-None-Match: *`` on the PUT /
CompleteMultipartUpload, checked by the store).  Other targets only check ``exists`` just
before publishing: a writer landing between that check and the upload wins silently.

Local files are created with mode ``0o666 & ~umask`` like ``open()`` does; a
file that replaces an existing one keeps that file's mode.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Any, Protocol

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from ..errors import EnvcryptError, ObjectExistsError

__all__ = ["Sink", "open_sink", "uses_buffered_sink", "version_of", "ConcurrentModificationError", "TEMP_PREFIX"]

TEMP_PREFIX = ".envcrypt-tmp-"
_BUFFERED_PROTOCOLS = frozenset({"s3", "s3a", "gcs", "gs", "abfs", "abfss", "az", "adl"})


class ConcurrentModificationError(EnvcryptError):
    """The object changed while it was being rewritten; it was left as the other writer made it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stat_version(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def version_of(target: Any, path: str) -> Any:
    """What identifies the current version of ``path`` for a conditional replacement (None: no condition)."""
    if isinstance(target, LocalFileSystem):
        return ("local", _stat_version(path))
    if isinstance(target, MemoryFileSystem):
        return ("memory", id(target.store.get(path)))
    if uses_buffered_sink(target) and "s3" in _protocols(target):
        target.invalidate_cache(path)
        etag = target.info(path).get("ETag")
        return ("s3", etag) if etag else None
    return None


def _protocols(target: Any) -> tuple[str, ...]:
    protocol = target.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)


class Sink(Protocol):
    raw: IO[bytes]

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class LocalSink:
    def __init__(self, target: LocalFileSystem, path: str, expect: Any = None, make_parents: bool = False,
                 exclusive: bool = False) -> None:
        self.path = path
        self._expect = expect
        self._exclusive = exclusive
        directory = os.path.dirname(path) or "."
        if make_parents or getattr(target, "auto_mkdir", False):
            os.makedirs(directory, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(path)
        fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
        self.raw: IO[bytes] = os.fdopen(fd, "wb")

    def _mode(self) -> int:
        try:
            return os.stat(self.path).st_mode & 0o7777  # a replacement keeps the file's mode
        except FileNotFoundError:
            return 0o666 & ~_umask()

    def commit(self) -> None:
        try:
            self.raw.flush()
            os.fchmod(self.raw.fileno(), self._mode())
            os.fsync(self.raw.fileno())
            self.raw.close()
            if self._expect is not None and ("local", _stat_version(self.path)) != self._expect:
                raise ConcurrentModificationError(f"{self.path} changed while it was rewritten; left as it is")
            if self._exclusive:
                # link(2) fails with EEXIST if the name exists: an atomic create-only publish
                try:
                    os.link(self._tmp, self.path)
                except FileExistsError:
                    raise ObjectExistsError(f"{self.path} exists (another writer created it)") from None
                os.unlink(self._tmp)
            else:
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
    def __init__(self, target: MemoryFileSystem, path: str, expect: Any = None, exclusive: bool = False) -> None:
        if path in target.pseudo_dirs:
            raise IsADirectoryError(path)
        parent = path
        while len(parent) > 1:
            parent = target._parent(parent)
            if target.isfile(parent):
                raise FileExistsError(parent)
        self._target, self._path, self._expect = target, path, expect
        self._exclusive = exclusive
        self.raw: IO[bytes] = MemoryFile(target, path)

    def commit(self) -> None:
        if self._expect is not None and ("memory", id(self._target.store.get(self._path))) != self._expect:
            self.abort()
            raise ConcurrentModificationError(f"{self._path} changed while it was rewritten; left as it is")
        if self._exclusive and self._path in self._target.store:  # check and store under the GIL
            self.abort()
            raise ObjectExistsError(f"{self._path} exists (another writer created it)")
        self.raw.seek(0)
        self.raw.commit()  # type: ignore[attr-defined]

    def abort(self) -> None:
        self.raw = MemoryFile()


def _precondition_failed(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the store's 412 Precondition Failed."""
    seen = 0
    while exc is not None and seen < 8:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if error.get("Code") == "PreconditionFailed" or status == 412:
                return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class BufferedFileSink:
    """The target's own AbstractBufferedFile: it publishes only when closed with a final flush.

    A failed final flush (the PUT or CompleteMultipartUpload raising) aborts:
    no multipart upload is left open.  ``expect`` (an ETag) makes the write
    conditional (``If-Match``, passed only to the calls that take it).
    """

    def __init__(self, target: Any, path: str, block_size: int | None = None, expect: Any = None,
                 exclusive: bool = False) -> None:
        kwargs: dict[str, Any] = {"block_size": block_size} if block_size else {}
        if expect is not None:
            kwargs["IfMatch"] = expect[1]
        self._path = path
        # s3fs's "xb" sends If-None-Match: * with the PUT / CompleteMultipartUpload; other stores
        # get a last-moment exists() check (racy, see the module docstring)
        self._exclusive = exclusive
        self._check_exists = (lambda: target.exists(path)) if exclusive and "s3" not in _protocols(target) else None
        self.raw: IO[bytes] = target.open(path, "xb" if exclusive and self._check_exists is None else "wb", **kwargs)

    def commit(self) -> None:
        if self._check_exists is not None and self._check_exists():
            self.abort()
            raise ObjectExistsError(f"{self._path} exists (another writer created it)")
        try:
            self.raw.close()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.abort()
            if _precondition_failed(exc) and self._exclusive:
                raise ObjectExistsError(f"{self._path} exists (another writer created it)") from exc
            if _precondition_failed(exc):
                raise ConcurrentModificationError(
                    f"{self._path} changed while it was rewritten; left as it is") from exc
            raise

    def abort(self) -> None:
        f: Any = self.raw
        f.forced = True  # close() must not flush (and so commit) what was buffered
        try:
            f.discard()  # aborts a started multipart upload
        finally:
            f.close()


class SpoolSink:
    """A local temp file uploaded with ``put_file`` on commit."""

    def __init__(self, target: Any, path: str, exclusive: bool = False) -> None:
        self._target, self._path, self._exclusive = target, path, exclusive
        fd, self._tmp = tempfile.mkstemp(prefix=TEMP_PREFIX)
        self.raw: IO[bytes] = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            self.raw.close()
            if self._exclusive and self._target.exists(self._path):  # racy: no conditional put here
                raise ObjectExistsError(f"{self._path} exists (another writer created it)")
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


def open_sink(target: Any, path: str, *, block_size: int | None = None, expect: Any = None,
              make_parents: bool = False, exclusive: bool = False) -> Sink:
    """The atomic sink for ``path`` on ``target``; ``expect`` (from ``version_of``) makes it conditional.

    ``make_parents``: a local target's missing parent directories are created (as ``auto_mkdir``).
    ``exclusive``: publish only if nothing is at the path (``ObjectExistsError`` otherwise).
    """
    if isinstance(target, LocalFileSystem):
        return LocalSink(target, path, expect, make_parents, exclusive)
    if isinstance(target, MemoryFileSystem):
        return MemorySink(target, path, expect, exclusive)
    if uses_buffered_sink(target):
        return BufferedFileSink(target, path, block_size, expect if expect and expect[0] == "s3" else None,
                                exclusive)
    return SpoolSink(target, path, exclusive)
