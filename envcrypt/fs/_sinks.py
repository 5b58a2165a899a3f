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

Killed writers: on Linux a local writer seals into an unnamed ``O_TMPFILE`` in the
target's directory, named only at publication, so a writer killed with SIGKILL
(or a machine that lost power) leaves nothing.  Elsewhere, and for the
microseconds between naming and renaming, the temp file ``.envcrypt-tmp-*``
carries an exclusive ``flock`` for as long as its writer lives; a dead writer's
is left behind, unlocked.  The first local
write of a process into a directory removes such unlocked temp files there
(``sweep_stale_temps``), so a re-run of a killed job leaves none; a live
writer's temp file, locked, is never touched.

Local files are created with mode ``0o666 & ~umask`` like ``open()`` does; a
file that replaces an existing one keeps that file's mode.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
import threading
from typing import IO, Any, Protocol

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from ..errors import ObjectExistsError
from ._backend import ConcurrentModificationError, changed_while_rewritten, object_changed

__all__ = ["Sink", "open_sink", "uses_buffered_sink", "version_of", "ConcurrentModificationError", "TEMP_PREFIX",
           "sweep_stale_temps"]

TEMP_PREFIX = ".envcrypt-tmp-"
_BUFFERED_PROTOCOLS = frozenset({"s3", "s3a", "gcs", "gs", "abfs", "abfss", "az", "adl"})


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


_swept: set[str] = set()
_SWEPT_MAX = 100_000
_swept_lock = threading.Lock()


def sweep_stale_temps(directory: str) -> list[str]:
    """Remove the temp files in ``directory`` that no live writer holds (its flock died with it)."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # locked: a live writer's
            st = os.fstat(fd)
            # unlink only the file that was locked (not one renamed into its place meanwhile)
            if os.stat(entry.path, follow_symlinks=False).st_ino == st.st_ino:
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _sweep_once(directory: str) -> None:
    """``sweep_stale_temps`` on a process's first local write into ``directory`` (a scan per write
    would cost a directory listing each time)."""
    key = os.path.abspath(directory)
    with _swept_lock:
        if key in _swept:
            return
        if len(_swept) >= _SWEPT_MAX:  # a writer into millions of directories: sweep some again
            _swept.clear()
        _swept.add(key)
    sweep_stale_temps(key)


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
        _sweep_once(directory)
        self._tmp: str | None = None  # the temp file's name (None while it is an O_TMPFILE)
        fd = _unnamed_file(directory)
        while fd is None:
            fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX)
            if not _lock(fd):  # a sweeper took it between mkstemp and flock: it removes it; another
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._tmp)
                fd = None
        self.raw: IO[bytes] = os.fdopen(fd, "wb")

    def _mode(self) -> int:
        try:
            return os.stat(self.path).st_mode & 0o7777  # a replacement keeps the file's mode
        except FileNotFoundError:
            return 0o666 & ~_umask()

    def _link(self, name: str) -> None:
        """Give the unnamed (O_TMPFILE) file ``name``; FileExistsError if it is taken."""
        # linkat(AT_SYMLINK_FOLLOW) through /proc; os.link uses plain link(2), which does not follow
        # the /proc link, unless a dir fd is given
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(str(self.raw.fileno()), name, src_dir_fd=proc, follow_symlinks=True)
        finally:
            os.close(proc)

    def commit(self) -> None:
        try:
            self.raw.flush()
            os.fchmod(self.raw.fileno(), self._mode())
            os.fsync(self.raw.fileno())
            if self._expect is not None and ("local", _stat_version(self.path)) != self._expect:
                raise changed_while_rewritten(self.path)
            if self._exclusive:
                # link(2) fails with EEXIST if the name exists: an atomic create-only publish
                try:
                    if self._tmp is None:
                        self._link(self.path)
                    else:
                        os.link(self._tmp, self.path)
                except FileExistsError:
                    raise ObjectExistsError(f"{self.path} exists (another writer created it)") from None
                if self._tmp is not None:
                    os.unlink(self._tmp)
            else:
                if self._tmp is None:
                    # named only now, locked (we hold the flock), for the rename: a kill between
                    # the two leaves a sealed temp file that the next sweep removes
                    _lock(self.raw.fileno())  # an O_TMPFILE: no sweeper can hold it yet
                    self._tmp = self._name_unnamed()
                os.replace(self._tmp, self.path)
            self._tmp = None
            self.raw.close()
        except BaseException:
            self.abort()
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _name_unnamed(self) -> str:
        directory = os.path.dirname(self.path) or "."
        while True:
            name = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(6))
            try:
                self._link(name)
                return name
            except FileExistsError:
                continue

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.raw.close()  # an unnamed (O_TMPFILE) file vanishes with its descriptor
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)


def _lock(fd: int) -> bool:
    """Mark a temp file as a live writer's: an exclusive flock, released by the kernel when we die.
    False when a sweeper holds it (it is being removed)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        pass  # no flock on this file system: the sweeper cannot lock (so never removes) it either
    return True


def _unnamed_file(directory: str) -> int | None:
    """An O_TMPFILE in ``directory`` (Linux): it has no name until it is published, so a writer
    killed before that leaves nothing behind.  None where the OS or file system has none
    (or /proc, through which it is named, is missing)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError:
        return None


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
            raise changed_while_rewritten(self._path)
        if self._exclusive and self._path in self._target.store:  # check and store under the GIL
            self.abort()
            raise ObjectExistsError(f"{self._path} exists (another writer created it)")
        self.raw.seek(0)
        self.raw.commit()  # type: ignore[attr-defined]

    def abort(self) -> None:
        self.raw = MemoryFile()


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
            if object_changed(exc):  # a 412: If-None-Match (a create-only write) or If-Match failed
                if self._exclusive:
                    raise ObjectExistsError(f"{self._path} exists (another writer created it)") from exc
                raise changed_while_rewritten(self._path) from exc
            raise

    def abort(self) -> None:
        f: Any = self.raw
        # The one private attribute of an fsspec object set in envcrypt: AbstractBufferedFile.close()
        # flushes (and so publishes) what is buffered unless ``forced`` is set, and fsspec has no
        # public way to close a write file without committing it (``discard`` only aborts a
        # multipart upload already started).
        f.forced = True
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
