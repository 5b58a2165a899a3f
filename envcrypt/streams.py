"""Streaming writer and random-access reader over binary file objects.

``EncryptingWriter`` seals each full 16 KiB chunk as soon as it has it (in
batches, straight from the caller's buffer when it can) and writes the short
final chunk on ``close``; it never writes the final chunk after an error, so
an interrupted stream can never pass for a complete object.

``DecryptingReader`` is a seekable ``io.RawIOBase``: a read maps its byte range
to the chunks that hold it, fetches exactly those sealed chunks in one read of
the underlying file, opens them into the caller's buffer, and returns nothing
that has not been authenticated.  Anything that needs the plaintext length
(``size``, seeking from the end, reading at or past the end) first opens the
final chunk, which authenticates the length.  After an integrity failure the
reader keeps failing.
"""

from __future__ import annotations

import io
import mmap
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import IO, Any, cast

from . import _batches, _buffers
from .chunked import ChunkCipher, new_message, open_span
from .envelope import KeyUris, check_context, new_stream_header, open_body, read_header
from .errors import ClosedError, IntegrityError, InternalError, UnpublishedWriteWarning
from .format import (
    BODY_PREFIX_SIZE,
    CHUNK_SIZE,
    MAX_CHUNKS,
    SEALED_CHUNK_SIZE,
    Header,
    plaintext_size,
    sealed_chunk_end,
)
from .slots import TrustedKeysArg

__all__ = ["EncryptingWriter", "DecryptingReader", "open_writer", "open_reader", "exception_since"]

DEFAULT_BATCH_CHUNKS = 256  # 4 MiB of plaintext per sealing batch
_FETCH_BUFFER = DEFAULT_BATCH_CHUNKS * SEALED_CHUNK_SIZE + BODY_PREFIX_SIZE  # a reader's sealed span


class EncryptingWriter(io.RawIOBase):
    """A write-only binary stream that encrypts into ``fileobj``."""

    def __init__(
        self,
        fileobj: IO[bytes],
        header: Header,
        dek: bytes,
        *,
        batch_chunks: int = DEFAULT_BATCH_CHUNKS,
        close_fileobj: bool = False,
        charge: Callable[[int], None] | None = None,
    ) -> None:
        """``charge`` (from :func:`envcrypt.envelope.new_stream_header`) is called once at close
        with the plaintext bytes sealed: the DEK cache's byte budget of a cached DEK."""
        super().__init__()
        if batch_chunks < 1:
            raise ValueError("batch_chunks must be >= 1")
        self._raw = fileobj
        self._close_raw = close_fileobj
        self.header = header
        head = header.pack()
        prefix, self._cipher = new_message(dek, header.immutable)
        self._batch = batch_chunks
        # pooled buffers (envcrypt._batches): no zeroing, no page faults after the first stream
        self._stage = _batches.take(batch_chunks * CHUNK_SIZE)
        self._staged = 0
        self._stage_dirty = 0  # plaintext was staged up to here: wiped when the buffer is given back
        self._out = _batches.take(batch_chunks * SEALED_CHUNK_SIZE)
        self._chunk = 0  # index of the next chunk to seal
        self._written = 0  # plaintext bytes accepted
        self._sealed = 0  # plaintext bytes sealed (charged to the DEK cache at close)
        self._charge = charge
        self._failed = False
        self._with_depth = 0  # > 0 inside our own ``with`` block
        self._exception_at_open = sys.exc_info()[1]  # see close()
        self._raw.write(head + prefix)
        self.header_size = len(head)

    def __repr__(self) -> str:
        return f"<EncryptingWriter written={self._written} closed={self.closed}>"

    def __reduce__(self) -> Any:
        raise TypeError("an EncryptingWriter holds key material and cannot be pickled")

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data: Any) -> int:
        if self.closed or self._failed:
            raise ClosedError("write to a closed or aborted envcrypt writer")
        view = memoryview(data).cast("B")
        n = len(view)
        try:
            pos = 0
            if self._staged:
                take = min(n, len(self._stage) - self._staged)
                # marked before the copy: an exception during it still gets the bytes wiped
                self._stage_dirty = max(self._stage_dirty, self._staged + take)
                self._stage[self._staged : self._staged + take] = view[:take]
                self._staged += take
                pos = take
                if self._staged == len(self._stage):
                    with memoryview(self._stage) as stage:
                        self._seal_out(stage)
                    self._staged = 0
            # the stage is empty here: whole chunks are sealed straight from the caller's buffer
            # (a batch at a time), only a short tail is staged -- no copy of 1 MiB pieces
            batch_bytes = self._batch * CHUNK_SIZE
            while n - pos >= CHUNK_SIZE:
                step = min(batch_bytes, (n - pos) // CHUNK_SIZE * CHUNK_SIZE)
                self._seal_out(view[pos : pos + step])
                pos += step
            rest = n - pos
            if rest:
                self._stage_dirty = max(self._stage_dirty, self._staged + rest)
                self._stage[self._staged : self._staged + rest] = view[pos:]
                self._staged += rest
        except BaseException:
            self._failed = True
            raise
        self._written += n
        return n

    def _seal_out(self, full_chunks: memoryview) -> None:
        count = len(full_chunks) // CHUNK_SIZE
        if self._chunk + count >= MAX_CHUNKS:
            raise ValueError("message exceeds the C2SP maximum of 2**38 chunks")
        with memoryview(self._out) as out:
            size = self._cipher.seal(self._chunk, full_chunks, out, final=False)
            self._sealed += len(full_chunks)
            self._raw.write(out[:size])
        self._chunk += count

    def close(self) -> None:
        """Seal whatever is staged, with the short final chunk, and write it.

        A close() made while an exception raised after the writer was opened
        propagates (an ``io.TextIOWrapper`` or ``BufferedWriter`` closing it
        from its own ``__exit__``, a ``finally: w.close()``) seals nothing:
        inside this writer's own ``with`` block it is left to this writer's
        ``__exit__`` (which seals only if the block ended normally), elsewhere
        it aborts.
        """
        if self.closed:
            return
        if not self._failed and exception_since(self._exception_at_open):
            if self._with_depth:
                return
            self._failed = True
            warnings.warn(
                "envcrypt writer closed while an exception propagates: the final chunk was not written",
                UnpublishedWriteWarning, stacklevel=2,
            )
        try:
            if not self._failed:
                with memoryview(self._stage) as whole, whole[: self._staged] as stage, \
                        memoryview(self._out) as out:
                    full = (self._staged // CHUNK_SIZE) * CHUNK_SIZE
                    if full:
                        self._seal_out(stage[:full])
                    size = self._cipher.seal(self._chunk, stage[full:], out, final=True)
                    self._sealed += len(stage) - full
                    self._raw.write(out[:size])
                self._chunk += 1
                flush = getattr(self._raw, "flush", None)
                if flush is not None:
                    flush()
        except BaseException:
            self._failed = True
            raise
        finally:
            if self._charge is not None:  # the DEK cache's byte budget (also for aborted writes)
                charge, self._charge = self._charge, None
                charge(self._sealed)
            self._release()
            super().close()

    def abort(self) -> None:
        """Stop without writing the final chunk: what was written cannot pass for an object."""
        self._failed = True
        self.close()

    def _release(self) -> None:
        stage, out, self._stage, self._out = self._stage, self._out, bytearray(), bytearray()
        _batches.give(stage, plaintext_up_to=self._stage_dirty)
        _batches.give(out)
        if self._close_raw:
            self._raw.close()

    def __enter__(self) -> EncryptingWriter:
        if self.closed or self._failed:
            raise ClosedError("enter a closed or aborted envcrypt writer")
        self._with_depth += 1
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._with_depth -= 1
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # A writer dropped without close() must not finish the object: io's
        # default finalizer would call close() and seal a truncated stream
        # that then reads as complete.
        if not self.closed:
            self._failed = True
        super().__del__()


class DecryptingReader(io.RawIOBase):
    """A seekable, read-only binary stream of an envcrypt object's plaintext."""

    def __init__(
        self,
        fileobj: IO[bytes],
        header: Header,
        header_size: int,
        cipher: ChunkCipher,
        *,
        start: int = 0,
        stored_size: int | None = None,
        close_fileobj: bool = False,
    ) -> None:
        super().__init__()
        self._raw = fileobj
        self._close_raw = close_fileobj
        self.header = header
        self.header_size = header_size
        self._cipher = cipher
        self._body = start + header_size  # absolute offset of the body in fileobj
        self._pos = 0
        self._sealed = bytearray()
        self._edge = bytearray(CHUNK_SIZE)
        self._error: BaseException | None = None
        self._seekable = fileobj.seekable()
        self._view_of = _buffers.whole_view(fileobj)  # in-memory source: decrypt in place
        self._final_checked = False
        self._size: int | None = None
        self._final_index: int | None = None
        # sequential mode (non-seekable input): read-ahead and the current opened chunk
        self._pending = bytearray()
        self._stream_chunk = 0
        self._plain_at = self._plain_len = 0
        if stored_size is None and self._seekable:
            stored_size = fileobj.seek(0, io.SEEK_END) - start
        if stored_size is not None:
            try:
                self._size = plaintext_size(stored_size - header_size)
            except ValueError:
                self._error = IntegrityError()
            else:
                self._final_index = self._size // CHUNK_SIZE

    def __repr__(self) -> str:
        return f"<DecryptingReader pos={self._pos} closed={self.closed}>"

    def __reduce__(self) -> Any:
        raise TypeError("a DecryptingReader holds key material and cannot be pickled")

    # ------------------------------------------------------------ io protocol

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        return self._pos

    @property
    def size(self) -> int:
        """Plaintext length, authenticated (opens the final chunk once)."""
        self._authenticate_length()
        if self._size is None:
            raise InternalError("plaintext size unknown after authenticating it")
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if not self._seekable:
            raise io.UnsupportedOperation("the underlying file is not seekable")
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        if not self._seekable:
            if size is None or size < 0:
                return self.readall()
            buf = bytearray(size)
            n = self.readinto(buf)
            del buf[n:]
            return bytes(buf)
        if self._size is None:
            raise InternalError("a seekable reader without a plaintext size")
        remaining = self._size - self._pos
        want = remaining if size is None or size < 0 else min(size, remaining)
        if want <= 0:
            if size != 0:
                self._authenticate_length()
            return b""
        result, view = _buffers.new_bytes(want)
        n = self.readinto(view)
        if n != want:  # the stored length lied: readinto authenticates the final chunk
            raise IntegrityError()
        return _buffers.finish(result)

    def readall(self) -> bytes:
        if self._seekable:
            return self.read(-1)
        parts: list[bytes] = []
        while True:
            part = self.read(4 * 1024 * 1024)
            if not part:
                return b"".join(parts)
            parts.append(part)

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` with plaintext from the current position; short only at the end."""
        self._check_open()
        out = memoryview(buffer).cast("B")
        try:
            if self._seekable:
                n = self._readinto_random(out)
            else:
                n = self._readinto_sequential(out)
        except BaseException as exc:
            if isinstance(exc, IntegrityError):
                self._error = exc
            raise
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            sealed, self._sealed = self._sealed, bytearray()
            _batches.give(sealed)  # sealed bytes only: nothing to wipe
            if self._close_raw:
                self._raw.close()
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError("read from a closed envcrypt reader")
        if self._error is not None:
            raise IntegrityError()

    # ------------------------------------------------------------ random access

    def _authenticate_length(self) -> None:
        self._check_open()
        if self._final_checked:
            return
        if self._size is None:  # sequential: read through to the end
            raise io.UnsupportedOperation("the plaintext length of a non-seekable stream is known only at its end")
        if self._final_index is None or self._size is None:
            raise InternalError("a seekable reader without a plaintext size")
        try:
            at = self._final_index * CHUNK_SIZE
            self._open_span(self._final_index, self._final_index, at, at, memoryview(self._edge)[:0])
        except IntegrityError as exc:
            self._error = exc
            raise

    def _readinto_random(self, out: memoryview) -> int:
        if self._size is None or self._final_index is None:
            raise InternalError("random access without a plaintext size")
        pos, want = self._pos, len(out)
        if want == 0:
            return 0
        if pos >= self._size:
            self._authenticate_length()
            return 0
        end = min(pos + want, self._size)
        done = 0
        while pos < end:
            first = pos // CHUNK_SIZE
            # a span read from a file goes through a reused buffer of at most a batch;
            # an in-memory source needs no buffer, so a read is one span
            batch = DEFAULT_BATCH_CHUNKS if self._view_of is None else MAX_CHUNKS
            last = min((end - 1) // CHUNK_SIZE, first + batch - 1)
            span_end = min(end, (last + 1) * CHUNK_SIZE)
            if span_end == self._size:
                last = self._final_index  # reaching the end opens the (maybe empty) final chunk
            self._open_span(first, last, pos, span_end, out[done : done + span_end - pos])
            done += span_end - pos
            pos = span_end
        return done

    def _open_span(self, first: int, last: int, start: int, end: int, out: memoryview) -> None:
        """Fetch sealed chunks first..last in one read; place plaintext [start, end) into ``out``."""
        if self._size is None:
            raise InternalError("random access without a plaintext size")
        body = self._body + BODY_PREFIX_SIZE
        at = body + first * SEALED_CHUNK_SIZE
        length = body + sealed_chunk_end(last, self._size) - at
        scratch = memoryview(self._edge)
        if self._view_of is None:
            sealed = self._fetch(at, length)
            open_span(self._cipher, sealed, first, start, end, out, plaintext_size=self._size, scratch=scratch)
        else:
            whole = self._view_of()
            try:
                if len(whole) < at + length:
                    raise IntegrityError()
                open_span(self._cipher, whole[at : at + length], first, start, end, out, plaintext_size=self._size,
                          scratch=scratch)
            finally:
                whole.release()  # an mmap can be closed again once the reader is done with it
        if last == self._final_index:
            self._final_checked = True

    def _fetch(self, start: int, length: int) -> memoryview:
        if len(self._sealed) < length:
            # a batch's worth from the pool (a longer span, rare, gets its own buffer)
            old, self._sealed = self._sealed, _batches.take(max(length, _FETCH_BUFFER))
            _batches.give(old)
        view = memoryview(self._sealed)[:length]
        self._raw.seek(start)
        got = _readinto_full(self._raw, view)
        if got != length:
            raise IntegrityError()
        return view

    # ------------------------------------------------------------ sequential

    def _readinto_sequential(self, out: memoryview) -> int:
        """Non-seekable input: decrypt forward, looking one byte ahead to find the final chunk."""
        done = 0
        edge = memoryview(self._edge)
        while done < len(out):
            if self._plain_at < self._plain_len:
                take = min(len(out) - done, self._plain_len - self._plain_at)
                out[done : done + take] = edge[self._plain_at : self._plain_at + take]
                self._plain_at += take
                done += take
                continue
            if self._final_checked:
                break
            # the next chunk is final unless more than one sealed chunk is left
            while len(self._pending) <= SEALED_CHUNK_SIZE:
                more = self._raw.read(4 * SEALED_CHUNK_SIZE)
                if not more:
                    break
                self._pending += more
            final = len(self._pending) <= SEALED_CHUNK_SIZE
            take_sealed = len(self._pending) if final else SEALED_CHUNK_SIZE
            with memoryview(self._pending) as pending:
                n = self._cipher.open(self._stream_chunk, pending[:take_sealed], edge, final=final)
            del self._pending[:take_sealed]
            self._stream_chunk += 1
            self._plain_len, self._plain_at = n, 0
            self._final_checked = final
        return done


def exception_since(marker: BaseException | None) -> bool:
    """True while an exception other than ``marker`` is being raised or handled.

    ``marker`` is what ``sys.exc_info()`` held when a writer was opened, so a
    writer opened inside an ``except`` block is not mistaken for a failed one.
    """
    current = sys.exc_info()[1]
    return current is not None and current is not marker


def _readinto_full(raw: IO[bytes], view: memoryview) -> int:
    got = 0
    readinto = getattr(raw, "readinto", None)
    while got < len(view):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            chunk = raw.read(len(view) - got)
            n = len(chunk) if chunk else 0
            view[got : got + n] = chunk
        if not n:
            break
        got += n
    return got


# ---------------------------------------------------------------- factories


def open_writer(
    fileobj: IO[bytes],
    key_uri: KeyUris = None,
    *,
    encryption_context: Mapping[str, str] | None = None,
    batch_chunks: int = DEFAULT_BATCH_CHUNKS,
    close_fileobj: bool = False,
    **resolver_options: Any,
) -> EncryptingWriter:
    """A streaming writer that encrypts into ``fileobj`` with bounded memory.

    Use it as a context manager: leaving the block normally writes the final
    chunk; leaving it with an exception does not, so the partial output is
    never a valid object.
    """
    dek, header, charge = new_stream_header(key_uri, encryption_context, resolver_options)
    return EncryptingWriter(fileobj, header, dek, batch_chunks=batch_chunks, close_fileobj=close_fileobj,
                            charge=charge)


def open_reader(
    fileobj: IO[bytes] | bytes | bytearray | memoryview | mmap.mmap,
    *,
    trusted_keys: TrustedKeysArg = None,
    encryption_context: Mapping[str, str] | None = None,
    stored_size: int | None = None,
    close_fileobj: bool = False,
    **resolver_options: Any,
) -> DecryptingReader:
    """A seekable reader of the plaintext of the envcrypt object at ``fileobj``'s position.

    ``stored_size`` (the object's size in bytes) spares a seek to the end when
    the caller knows it.  A non-seekable ``fileobj`` gives a forward-only reader.
    ``trusted_keys`` are the master keys this reader accepts, as in :func:`envcrypt.decrypt`
    (None: the default key only).

    ``fileobj`` may also be the object's bytes themselves (bytes, bytearray, memoryview, mmap):
    spans of process-private memory (bytes, bytearray, an ``io.BytesIO``) are decrypted in
    place; a mapping that another process could change (mmap) is copied span by span first,
    like a file.  The reader holds a view of the memory until it is closed.
    """
    if isinstance(fileobj, (bytes, bytearray, memoryview, mmap.mmap)):
        view_file = _buffers.ViewFile(fileobj)
        try:
            return _open_reader(cast(IO[bytes], view_file), trusted_keys, encryption_context, stored_size, True,
                                resolver_options)
        except BaseException:
            view_file.close()  # an mmap can be closed again
            raise
    return _open_reader(fileobj, trusted_keys, encryption_context, stored_size, close_fileobj, resolver_options)


def _open_reader(
    raw: IO[bytes],
    trusted_keys: TrustedKeysArg,
    encryption_context: Mapping[str, str] | None,
    stored_size: int | None,
    close_fileobj: bool,
    resolver_options: Mapping[str, Any],
) -> DecryptingReader:
    start = raw.tell() if raw.seekable() else 0
    header, header_size = read_header(raw)
    check_context(header, encryption_context)
    if stored_size is None and raw.seekable():
        here = raw.tell()
        stored_size = raw.seek(0, io.SEEK_END) - start
        raw.seek(here)
    if stored_size is not None:  # an impossible body length fails before any key is asked (FORMAT.md)
        try:
            plaintext_size(stored_size - header_size)
        except ValueError:
            raise IntegrityError() from None
    prefix = bytearray(BODY_PREFIX_SIZE)
    if _readinto_full(raw, memoryview(prefix)) < BODY_PREFIX_SIZE:
        raise IntegrityError()
    cipher = open_body(header, bytes(prefix), trusted_keys, resolver_options)
    return DecryptingReader(
        raw, header, header_size, cipher, start=start, stored_size=stored_size, close_fileobj=close_fileobj
    )
