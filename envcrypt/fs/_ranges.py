"""Plaintext byte ranges of opened objects: which sealed chunks, fetched how, opened into what.

A plaintext range ``[start, end)`` lives in chunks ``start // CHUNK_SIZE`` ..
``(end - 1) // CHUNK_SIZE``; a range that reaches the end of the object always
takes the (short) final chunk too, whose authentication proves the length.
Many ranges of one call (``cat_ranges``) are planned together: their sealed
spans are sorted and neighbours (overlapping, or less than ``COALESCE_GAP``
apart) merged, and the merged spans of every object are fetched with one
``cat_ranges`` call of the target (concurrent on async targets: s3fs, gcsfs,
adlfs), with ``pread`` on one descriptor per object on a local disk, and as
views of the stored buffer in memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from .. import _buffers
from ..chunked import open_span
from ..errors import IntegrityError
from ..format import BODY_PREFIX_SIZE, CHUNK_SIZE, SEALED_CHUNK_SIZE, sealed_chunk_end
from ._opened import Opened

__all__ = ["Planned", "plan", "coalesce", "fetch_spans", "open_planned", "clamp"]

#: sealed bytes between two spans below which they are fetched as one (a request costs more)
COALESCE_GAP = 4 * SEALED_CHUNK_SIZE


def clamp(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """fsspec's ``cat_file`` range arguments (None, negative from the end) as ``0 <= start <= end <= size``."""
    lo = 0 if start is None else (max(0, size + start) if start < 0 else start)
    hi = size if end is None else (size + end if end < 0 else end)
    hi = max(0, min(hi, size))
    return min(lo, hi), hi


@dataclass(frozen=True)
class Planned:
    """One plaintext range of an opened object and the sealed span that holds it."""

    start: int
    end: int
    first: int  # first chunk index
    lo: int  # stored offsets of the sealed chunks first..last
    hi: int


def plan(opened: Opened, start: int | None, end: int | None) -> Planned:
    """The chunks of a plaintext range; a range reaching the end takes the final chunk."""
    size = opened.head.plaintext_size
    if size is None:
        raise IntegrityError()
    start, end = clamp(size, start, end)
    first, last = start // CHUNK_SIZE, (max(end, start + 1) - 1) // CHUNK_SIZE
    if end == size:
        first, last = min(first, size // CHUNK_SIZE), size // CHUNK_SIZE
    body = opened.head.header_size + BODY_PREFIX_SIZE
    return Planned(start, end, first, body + first * SEALED_CHUNK_SIZE, body + sealed_chunk_end(last, size))


def coalesce(spans: Sequence[tuple[int, int]], gap: int = COALESCE_GAP) -> tuple[list[tuple[int, int]], list[int]]:
    """Merged spans and, for every input span, the index of the merged span that holds it."""
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    merged: list[tuple[int, int]] = []
    where = [0] * len(spans)
    for i in order:
        lo, hi = spans[i]
        if merged and lo <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
        where[i] = len(merged) - 1
    return merged, where


@contextlib.contextmanager
def fetch_spans(target: Any, requests: Sequence[tuple[str, int, int]]) -> Iterator[list[Any]]:
    """The stored bytes of ``(path, lo, hi)`` spans, in order: a buffer, or the exception
    the target raised for that span (``FileNotFoundError``, ...)."""
    if type(target) is MemoryFileSystem:
        views: list[Any] = []
        try:
            for path, lo, hi in requests:
                stored = target.store.get(path)
                if stored is None:
                    views.append(FileNotFoundError(path))
                    continue
                whole = stored.getbuffer()
                views.append(bytes(whole[lo:hi]) if hi - lo <= CHUNK_SIZE * 4 else whole[lo:hi])
                whole.release()  # a slice keeps its own export of the buffer
            yield views
        finally:
            for view in views:
                if isinstance(view, memoryview):
                    view.release()
        return
    if isinstance(target, LocalFileSystem):
        yield _pread_spans(requests)
        return
    if not requests:
        yield []
        return
    paths = [r[0] for r in requests]
    yield list(target.cat_ranges(paths, [r[1] for r in requests], [r[2] for r in requests], on_error="return"))


def _pread_spans(requests: Sequence[tuple[str, int, int]]) -> list[Any]:
    out: list[Any] = []
    fds: dict[str, int | BaseException] = {}
    sizes: dict[int, int] = {}
    try:
        for path, lo, hi in requests:
            fd = fds.get(path)
            if fd is None:
                try:
                    fd = fds[path] = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    fd = fds[path] = exc
            if isinstance(fd, BaseException):
                out.append(fd)
                continue
            try:
                out.append(_pread(fd, lo, hi, sizes))
            except OSError as exc:
                out.append(exc)
    finally:
        for fd in fds.values():
            if isinstance(fd, int):
                os.close(fd)
    return out


def _pread(fd: int, lo: int, hi: int, sizes: dict[int, int]) -> bytes:
    if fd not in sizes:
        sizes[fd] = os.fstat(fd).st_size
    parts, offset, hi = [], lo, min(hi, sizes[fd])
    while offset < hi:
        piece = os.pread(fd, hi - offset, offset)
        if not piece:
            break
        parts.append(piece)
        offset += len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def open_planned(opened: Opened, planned: Planned, sealed: memoryview) -> bytes:
    """Plaintext of ``planned`` from its sealed chunks (every chunk in ``sealed`` authenticated)."""
    if len(sealed) != planned.hi - planned.lo:
        raise IntegrityError()  # the object is shorter than its head said
    size = opened.head.plaintext_size
    if size is None:
        raise IntegrityError()
    result, out = _buffers.new_bytes(planned.end - planned.start)
    open_span(opened.cipher, sealed, planned.first, planned.start, planned.end, out, plaintext_size=size,
              scratch=memoryview(bytearray(CHUNK_SIZE)))
    return _buffers.finish(result)
