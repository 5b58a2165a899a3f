"""The file objects of the envcrypt filesystem: a random-access reader and an atomic writer.

``EnvcryptReadFile._fetch_range`` maps a plaintext range to the chunks that
hold it, fetches exactly those sealed chunks with ONE ranged read of the target
(``cat_file(path, start, end)``), and opens them with the object's chunk
cipher straight into the returned buffer.  A read that reaches the end of the
object always includes the final chunk, which authenticates the length.  The
last partially-used chunk is kept, so small sequential reads do not fetch a
chunk twice; nothing else is read ahead (the default ``cache_type`` is
``"none"``).

If a ranged read fails to authenticate because the object was replaced by a
rewrap (same immutable header and body prefix, new key slots, so possibly a
new header length and stored size), the reader re-reads the head and
continues at the new body offset, with the plaintext size of the fresh head:
readers never fail during a rotation.

``EnvcryptWriteFile`` streams through an ``EncryptingWriter`` into an atomic
sink; the object appears at the path only when ``close`` succeeds, and leaving
a ``with`` block by an exception aborts: no final chunk, nothing published.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractBufferedFile

from .. import _buffers
from ..chunked import ChunkCipher, open_span
from ..errors import ClosedError, EnvcryptError, IntegrityError, ObjectChangedError, UnpublishedWriteWarning
from ..format import BODY_PREFIX_SIZE, CHUNK_SIZE, SEALED_CHUNK_SIZE, sealed_chunk_end
from ..streams import EncryptingWriter, exception_since
from ._heads import Head
from ._pinning import pinned_cat
from ._sinks import Sink
from ._spool import Spool

if TYPE_CHECKING:
    from .filesystem import EnvcryptFileSystem

__all__ = ["EnvcryptReadFile", "EnvcryptWriteFile"]


class _ThreadUsedFiles:
    """Read files used from threads other than the main thread, let go of before the interpreter exits.

    A client that reads through a pool of its own native threads (pyarrow's
    I/O pool through ``PyFileSystem``) may still be closing and releasing our
    file objects on those threads when the main thread returns.  If the
    interpreter finalizes meanwhile, such a thread cannot take the GIL back
    (after ``os.close``, an ``os.pread``, or to drop its last reference) and
    CPython ends it with ``pthread_exit``, which unwinds through C++ frames
    that do not allow it: ``terminate called without an active exception``,
    exit 134.  So the first such use registers an ``atexit`` hook that waits,
    at most ``WAIT_SECONDS``, until every file used from another thread has
    been released (collected) by its client: after that the client's threads
    no longer run Python on our behalf.  Files only ever used from the main
    thread are never waited for.
    """

    WAIT_SECONDS = 2.0
    GRACE_SECONDS = 0.05

    def __init__(self) -> None:
        self._files: weakref.WeakSet[EnvcryptReadFile] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._registered = False

    def note(self, f: EnvcryptReadFile) -> None:
        if f.__dict__.get("_thread_used") or threading.current_thread() is threading.main_thread():
            return
        f.__dict__["_thread_used"] = True
        with self._lock:
            self._files.add(f)
            if not self._registered:
                atexit.register(self.wait)
                self._registered = True

    def pending(self) -> int:
        with self._lock:
            return len(self._files)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no file used from another thread is alive; True when none is.

        Then a short grace (``GRACE_SECONDS``) more: the client tears down what held the files
        (pyarrow: the fragments and its ``PyFileSystem`` handler, whose last reference is
        dropped on an I/O thread right after the scan) just after it lets go of them.
        """
        deadline = time.monotonic() + (self.WAIT_SECONDS if timeout is None else timeout)
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        time.sleep(self.GRACE_SECONDS)
        return True


THREAD_USED = _ThreadUsedFiles()


class EnvcryptReadFile(AbstractBufferedFile):  # type: ignore[misc]
    DEFAULT_BLOCK_SIZE = 1024 * 1024

    def __init__(
        self,
        fs: EnvcryptFileSystem,
        path: str,
        head: Head,
        immutable_size: int,
        cipher: ChunkCipher,
        block_size: int | None = None,
        cache_type: str = "none",
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if head.plaintext_size is None:
            raise IntegrityError()
        self._cipher = cipher
        # the plaintext size implied by the stored size is authenticated only by opening the
        # final chunk: ``size`` does that on first use after __init__ (see the property)
        self._size_claimed = head.plaintext_size
        self._size_checked = False
        self._initialising = True
        # sticky: a reader that failed keeps failing (IntegrityError, or ObjectChangedError when
        # the object it was pinned to was replaced by another one)
        self._failed: EnvcryptError | None = None
        self._head = head
        self._immutable_size = immutable_size
        self._edge_index = -1
        self._edge = b""
        self._fd: int | None = None  # local targets: one descriptor, positional reads
        self._local = isinstance(fs.target, LocalFileSystem)
        self._memory = type(fs.target) is MemoryFileSystem  # subclasses may serve reads their own way
        self.fetched_bytes = 0  # stored bytes read from the target by this file
        super().__init__(
            fs, path, mode="rb", block_size=block_size or "default", cache_type=cache_type,
            cache_options=cache_options, size=head.plaintext_size, **kwargs,
        )
        self._initialising = False
        # fsspec's cache holds ``self._fetch_range``: a reference cycle that keeps a file a client
        # dropped alive, unclosed, until a garbage collection, on whatever thread (or at exit) that runs
        cache: Any = getattr(self, "cache", None)
        if cache is not None and getattr(cache, "fetcher", None) is not None:
            cache.fetcher = _weak_fetcher(self)
        THREAD_USED.note(self)

    def __repr__(self) -> str:
        return f"<EnvcryptReadFile {self.path!r}>"

    # identity, not fsspec's "same details" (its __hash__ calls fs.info(): a HEAD and a header
    # fetch on S3 the first time a file is put in THREAD_USED's WeakSet, and a "sync() from within
    # a running loop" error when that happens in __del__ on the event loop's thread)
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __reduce__(self) -> Any:
        return _reopen, (self.fs, self.path, self.loc)

    # ------------------------------------------------------------ the authenticated size

    @property
    def size(self) -> int:
        """The plaintext length, authenticated: the final chunk is opened before the length
        is first used (a seek from the end, a read that reaches the end, ``f.size``)."""
        if not self._size_checked and not self._initialising:
            self._authenticate_size()
        return self._size_claimed

    @size.setter
    def size(self, value: int) -> None:
        self._size_claimed = value

    def _authenticate_size(self) -> None:
        self._check_failed()
        # opens the final chunk (after a followed rewrap: of the fresh head's length)
        self._guarded(lambda: self._read_plain(self._size_claimed, self._size_claimed))
        self._size_checked = True

    def _check_failed(self) -> None:
        if self._failed is not None:
            raise ObjectChangedError() if isinstance(self._failed, ObjectChangedError) else IntegrityError()

    def _guarded(self, read: Any) -> bytes:
        """Run a plaintext read; after an integrity failure, follow a rewrap once, else fail for good."""
        self._check_failed()
        try:
            result: bytes = read()
            return result
        except (IntegrityError, ObjectChangedError) as exc:  # a rewrap also changes the pinned ETag
            try:
                followed = self._follow_rewrap()
            except Exception:
                followed = False
            if not followed:
                self._failed = _sticky(exc)
                raise
        try:
            result = read()
            return result
        except (IntegrityError, ObjectChangedError) as exc:
            self._failed = _sticky(exc)
            raise

    def read(self, length: int = -1) -> bytes:
        THREAD_USED.note(self)
        self._check_failed()
        if not self.closed and (length is None or length < 0 or self.loc + length >= self._size_claimed):
            self.size  # a read that reaches the end: authenticate the length first  # noqa: B018
        return super().read(length)  # type: ignore[no-any-return]

    def seek(self, loc: int, whence: int = 0) -> int:
        self._check_failed()
        return super().seek(loc, whence)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ ranged reads

    def _fetch_range(self, start: int, end: int) -> bytes:
        def read() -> bytes:
            size = self._size_claimed  # a followed rewrap may correct it
            stop = min(end, size)
            if start >= stop and not (start == stop == size):
                return b""
            return self._read_plain(start, stop)

        data = self._guarded(read)
        if end >= self._size_claimed:
            self._size_checked = True
        return data

    def read_range(self, start: int, end: int) -> bytes:
        """Plaintext ``[start, end)`` without touching the file position; safe to call from threads."""
        THREAD_USED.note(self)
        if end >= self._size_claimed:
            self.size  # noqa: B018 - authenticates the length before it bounds the range
        return self._guarded(lambda: self._read_plain(start, min(end, self._size_claimed), keep=False))

    def close(self) -> None:
        THREAD_USED.note(self)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()

    def _read_plain(self, start: int, end: int, keep: bool = True) -> bytes:
        size = self._size_claimed
        final_index = size // CHUNK_SIZE
        first = start // CHUNK_SIZE
        last = (end - 1) // CHUNK_SIZE if end > start else first
        if end == size:
            last = final_index  # reaching the end authenticates the length
        result, out = _buffers.new_bytes(end - start)
        done = 0
        if not keep:
            pass
        elif first == self._edge_index and first < last:
            # the head of the range is in the chunk kept from the previous read
            lo = start - first * CHUNK_SIZE
            piece = self._edge[lo:]
            out[: len(piece)] = piece
            done, first = len(piece), first + 1
        elif first == self._edge_index == last and end - start <= len(self._edge):
            lo = start - first * CHUNK_SIZE
            out[:] = self._edge[lo : lo + end - start]
            return _buffers.finish(result)
        if first == last and done == 0 and not self._memory:
            return self._read_one_chunk(first, final_index, start, end, keep)
        with self._sealed(first, last) as sealed:
            self._open_into(sealed, first, start + done, end, out[done:], keep)
        return _buffers.finish(result)

    def _read_one_chunk(self, index: int, final_index: int, start: int, end: int, keep: bool) -> bytes:
        """The common small read: one chunk fetched, opened into scratch, sliced."""
        sealed = self._fetch_sealed(*self._stored_span(index, index))
        scratch = bytearray(CHUNK_SIZE)
        n = self._cipher.open(index, sealed, memoryview(scratch), final=index == final_index)
        plain = bytes(memoryview(scratch)[:n])
        if keep:
            self._edge_index, self._edge = index, plain
        lo = start - index * CHUNK_SIZE
        return plain[lo : lo + end - start]

    @contextlib.contextmanager
    def _sealed(self, first: int, last: int) -> Iterator[memoryview]:
        """The sealed chunks first..last, from ONE ranged read (a view, without a copy, in memory)."""
        lo, hi = self._stored_span(first, last)
        store = getattr(self.fs.target, "store", None) if self._memory else None
        if store is None:
            yield self._fetch_sealed(lo, hi)
            return
        try:
            whole = store[self.path].getbuffer()
        except KeyError:
            raise FileNotFoundError(self.path) from None
        try:
            view = whole[lo:hi]
            try:
                self.fetched_bytes += len(view)
                if len(view) != hi - lo:
                    raise IntegrityError()
                yield view
            finally:
                view.release()
        finally:
            whole.release()

    def _stored_span(self, first: int, last: int) -> tuple[int, int]:
        """Stored offsets of sealed chunks first..last."""
        body = self._head.header_size + BODY_PREFIX_SIZE
        return body + first * SEALED_CHUNK_SIZE, body + sealed_chunk_end(last, self._size_claimed)

    def _fetch_sealed(self, lo: int, hi: int) -> memoryview:
        if self._local:
            data = self._pread(lo, hi - lo)
        else:
            data = pinned_cat(self.fs.target, self.path, lo, hi, self._head.etag)  # If-Match on S3
        self.fetched_bytes += len(data)
        if len(data) != hi - lo:
            raise IntegrityError()
        return memoryview(data)

    def _pread(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        parts = []
        while length > 0:
            piece = os.pread(self._fd, length, offset)
            if not piece:
                break
            parts.append(piece)
            offset += len(piece)
            length -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _open_into(
        self, sealed: memoryview, first: int, start: int, end: int, out: memoryview, keep: bool = True,
    ) -> None:
        """Open the sealed chunks (from ``first``) and place plaintext [start, end) into ``out``."""
        scratch = memoryview(bytearray(CHUNK_SIZE))
        kept = open_span(self._cipher, sealed, first, start, end, out, plaintext_size=self._size_claimed,
                         scratch=scratch)
        if keep and kept is not None:
            self._edge_index, self._edge = kept[0], bytes(scratch[: kept[1]])

    def _follow_rewrap(self) -> bool:
        """After a failed read: continue if the object was only rewrapped (same body).

        The object is the same when the immutable header part (context
        included) and the body prefix (salt and key commitment, which bind the
        data key) are unchanged; the header length, and so the stored size,
        may differ.  The plaintext size is taken from the fresh head: the one
        this file was opened with may have mixed a listing's stale size with
        newer bytes, and the final chunk decides the true length anyway.
        """
        old = self._head
        fresh = self.fs.head(self.path, refresh=True)
        if not fresh.encrypted or fresh.plaintext_size is None or fresh.error is not None or not fresh.complete:
            return False
        keep = self._immutable_size
        same_immutable = fresh.data[:keep] == old.data[:keep]
        old_prefix = old.data[old.header_size : old.header_size + BODY_PREFIX_SIZE]
        new_prefix = fresh.data[fresh.header_size : fresh.header_size + BODY_PREFIX_SIZE]
        if not same_immutable or old_prefix != new_prefix or fresh == old:
            return False
        self._head = fresh
        self._size_checked = False
        size: int = fresh.plaintext_size
        if size != old.plaintext_size:
            self.size = size
            cache: Any = getattr(self, "cache", None)
            if cache is not None:
                cache.size = size
            self._edge_index, self._edge = -1, b""
        return True


def _sticky(exc: EnvcryptError) -> EnvcryptError:
    """What a failed reader keeps: the error's class, not the error.  The error's traceback holds
    the frames of the failed read, whose locals hold this file, often through a client object the
    garbage collector cannot see into (pyarrow's ParquetReader): a cycle never collected, and
    a file the exit hook (THREAD_USED) then waits for."""
    return ObjectChangedError() if isinstance(exc, ObjectChangedError) else IntegrityError()


def _weak_fetcher(f: EnvcryptReadFile) -> Any:
    method = weakref.WeakMethod(f._fetch_range)

    def fetch(start: int, end: int) -> bytes:
        bound = method()
        if bound is None:
            raise ClosedError("read from a released envcrypt file")
        return bound(start, end)

    return fetch


def _reopen(fs: Any, path: str, loc: int) -> Any:
    f = fs.open(path, "rb")
    f.seek(loc)
    return f


class EnvcryptWriteFile(io.RawIOBase):
    """A write-only file: encrypts into an atomic sink, published on a successful close.

    ``spool``: False streams (a seek elsewhere than the current position raises
    ``io.UnsupportedOperation``); True gives the client a private local file
    (``_spool.Spool``) that it may seek, read, rewrite and truncate, sealed
    into the same writer and sink on close; None (the default, "auto") streams
    but holds the first ``DECIDE_BYTES`` back, so a client that seeks, reads or
    truncates before writing more than that (h5py, netCDF-4, zipfile all seek
    first) is moved to a spool, and one that only writes never is.
    ``seekable()`` is True only once spooled: a client asking it gets an honest answer.
    """

    DECIDE_BYTES = 1024 * 1024

    def __init__(
        self, fs: EnvcryptFileSystem, path: str, writer: EncryptingWriter, sink: Sink, autocommit: bool = True,
        spool: bool | None = None,
    ) -> None:
        super().__init__()
        self.fs, self.path, self.mode = fs, path, "wb"
        self._writer, self._sink = writer, sink
        self.autocommit = autocommit
        self._sealed = False  # final chunk written, waiting for commit
        self._done = False
        # the exception being handled (if any) when the file was opened: see close()
        self._exception_at_open = sys.exc_info()[1]
        self._with_depth = 0  # > 0 inside our own ``with`` block
        self._spool: Spool | None = Spool() if spool else None
        self._pending: bytearray | None = bytearray() if spool is None else None  # auto: not decided yet

    def __repr__(self) -> str:
        return f"<EnvcryptWriteFile {self.path!r} closed={self.closed}>"

    def __reduce__(self) -> Any:
        raise TypeError("a file open for writing cannot be pickled")

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._spool is not None and not self.closed

    def readable(self) -> bool:
        return self._spool is not None and not self.closed

    def tell(self) -> int:
        if self._spool is not None:
            return self._spool.file.tell()
        if self._pending is not None:
            return len(self._pending)
        return self._writer.tell()

    def write(self, data: Any) -> int:
        if self.closed:
            raise ClosedError("write to a closed envcrypt file")
        if self._spool is not None:
            return self._spool.file.write(data)
        if self._pending is not None:
            view = memoryview(data).cast("B")
            if len(self._pending) + len(view) <= self.DECIDE_BYTES:
                self._pending += view
                return len(view)
            pending, self._pending = self._pending, None  # a streaming client: stream from now on
            if pending:
                self._writer.write(pending)
            return self._writer.write(view)
        return self._writer.write(data)

    def _spooled(self, operation: str) -> Spool:
        """The spool, made now from what was held back if the client has not been decided yet."""
        if self.closed:
            raise ClosedError(f"{operation} on a closed envcrypt file")
        if self._spool is None and self._pending is not None:
            self._spool = Spool()
            self._spool.file.write(self._pending)
            self._pending = None
        if self._spool is None:
            raise io.UnsupportedOperation(
                f"{operation}: this envcrypt file streams (it is sealed in order, chunk by chunk); "
                "open it with spool=True for a client that seeks back, reads or truncates while writing"
            )
        return self._spool

    def seek(self, offset: int, whence: int = 0) -> int:
        if self._spool is None and self._pending is None and not self.closed:
            here = self._writer.tell()
            if (whence == 0 and offset == here) or (whence in (1, 2) and offset == 0):
                return here  # staying where it is: fine while streaming
        return self._spooled("seek").file.seek(offset, whence)

    def readinto(self, buffer: Any) -> int:
        return self._spooled("read").file.readinto(buffer)

    def truncate(self, size: int | None = None) -> int:
        return self._spooled("truncate").file.truncate(size)

    def flush(self) -> None:
        if self._spool is not None and not self.closed:
            self._spool.file.flush()
        super().flush()

    def fileno(self) -> int:
        raise io.UnsupportedOperation("an envcrypt file has no descriptor")

    def _seal_held(self) -> None:
        """Give the writer what the spool or the held-back prefix holds."""
        if self._spool is not None:
            self._spool.seal_into(self._writer)
            self._drop_spool()
        elif self._pending is not None:
            pending, self._pending = self._pending, None
            self._writer.write(pending)

    def _drop_spool(self) -> None:
        spool, self._spool = self._spool, None
        self._pending = None
        if spool is not None:
            spool.remove()

    def close(self) -> None:
        """Write the final chunk and publish the object (unless in a transaction).

        A close made while an exception raised *after* the file was opened is
        propagating publishes nothing: that is how ``fsspec.open(...)``'s
        ``OpenFile.__exit__``, an ``io`` wrapper's ``__exit__`` or a
        ``finally: f.close()`` close a file whose producer failed.  Inside the
        file's own ``with`` block the decision is left to its ``__exit__``.
        """
        if self.closed:
            return
        if not self._sealed and exception_since(self._exception_at_open):
            if self._with_depth:
                return  # our __exit__ decides
            self.discard()
            warnings.warn(
                f"envcrypt file {self.path!r} closed while an exception propagates: nothing was published",
                UnpublishedWriteWarning, stacklevel=2,
            )
            return
        try:
            self._seal_held()
            self._writer.close()
            self._sealed = True
            if self.autocommit:
                self.commit()
        except BaseException:
            self.discard()
            raise
        finally:
            super().close()

    def commit(self) -> None:
        if self._done:
            return
        if not self._sealed:
            raise ClosedError("commit before the file was closed")
        try:
            self._sink.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                self._sink.abort()  # e.g. a failed CompleteMultipartUpload: abort the upload
            raise
        finally:
            self._done = True
        self.fs.invalidate_written(self.path)

    def discard(self) -> None:
        """Abort: no final chunk, nothing published at the path."""
        if self._done:
            return
        self._done = True
        try:
            self._drop_spool()
            if not self._writer.closed:
                self._writer.abort()
        finally:
            self._sink.abort()
            if not self.closed:
                super().close()

    def __enter__(self) -> EnvcryptWriteFile:
        if self.closed:
            raise ClosedError("enter a closed envcrypt file")
        self._with_depth += 1
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._with_depth -= 1
        if exc_type is not None:
            self.discard()
        else:
            self.close()

    def __del__(self) -> None:
        # an unclosed writer that is garbage-collected never publishes anything
        if not getattr(self, "_done", True) and not self._sealed:
            try:
                self.discard()
            except Exception:
                pass
