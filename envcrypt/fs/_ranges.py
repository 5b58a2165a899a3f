"""Plaintext byte ranges of opened objects: which sealed chunks, fetched how, opened into what.

A plaintext range ``[start, end)`` lives in chunks ``start // CHUNK_SIZE`` ..
``(end - 1) // CHUNK_SIZE``; a range that reaches the end of the object always
takes the (short) final chunk too, whose authentication proves the length.
Many ranges of one call (``cat_ranges``) are planned together: their sealed
spans are sorted and neighbours (overlapping, or less than ``COALESCE_GAP``
apart) merged, and the merged spans of every object are fetched with one
``cat_ranges`` call of the target (concurrent on async targets: s3fs, gcsfs,
adlfs), with ``pread`` on one descriptor per object on a local disk, and as
views of the stored buffer in memory; the ranges of one call are then opened in
one pass (``open_all``).  A ``cat_file`` range within one chunk on a local disk
or in memory (the small random read) takes a short path: one ``pread`` (or one
copy) of that sealed chunk, opened whole into a chunk buffer and sliced, so a
small read costs the head check, the opened-object cache hit and one chunk.
Nothing decrypted is kept between calls.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from .. import _buffers
from ..chunked import open_span
from ..envelope import open_whole_body
from ..errors import IntegrityError, ObjectChangedError
from ..format import BODY_PREFIX_SIZE, CHUNK_SIZE, SEALED_CHUNK_SIZE, sealed_chunk_end
from ._heads import HEAD_CONCURRENCY, HEADS, PROBE_SIZE, Head, parse_head
from ._opened import Opened
from ._pinning import pinned_ranges, pins

if TYPE_CHECKING:
    from .filesystem import EnvcryptFileSystem

__all__ = ["Planned", "plan", "coalesce", "fetch_spans", "open_planned", "open_all", "clamp", "cat_range", "cat_whole",
           "cat_ranges"]

#: sealed bytes between two spans below which they are fetched as one (a request costs more)
COALESCE_GAP = 4 * SEALED_CHUNK_SIZE
#: results up to this size are built in a bytearray and copied (``_buffers`` pays off above it)
_SMALL = 64 * 1024
#: "to the end" for a whole-object fetch
_WHOLE = 1 << 62


def clamp(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """fsspec's ``cat_file`` range arguments (None, negative from the end) as ``0 <= start <= end <= size``."""
    lo = 0 if start is None else (max(0, size + start) if start < 0 else start)
    hi = size if end is None else (size + end if end < 0 else end)
    hi = max(0, min(hi, size))
    return min(lo, hi), hi


class Planned(NamedTuple):
    """One plaintext range of an opened object and the sealed span that holds it."""

    start: int
    end: int
    first: int  # first chunk index
    lo: int  # stored offsets of the sealed chunks first..last
    hi: int


def plan(opened: Opened, start: int | None, end: int | None) -> Planned:
    """The chunks of a plaintext range; a range reaching the end, or with a bound counted from
    the end, takes the final chunk."""
    size = opened.head.plaintext_size
    if size is None:
        raise IntegrityError()
    # a bound counted from the end is an offset only once the length is proven: that range
    # takes the final chunk too (its tag authenticates the length), as one reaching the end does
    from_end = (start is not None and start < 0) or (end is not None and end < 0)
    start, end = clamp(size, start, end)
    first, last = start // CHUNK_SIZE, (max(end, start + 1) - 1) // CHUNK_SIZE
    if end == size or from_end:
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
    (result,) = open_all([(opened, planned, sealed)])
    if isinstance(result, BaseException):
        raise result
    return result


def open_all(jobs: Sequence[tuple[Opened, Planned, memoryview]]) -> list[bytes | IntegrityError]:
    """Plaintext of each ``(opened, planned, sealed)`` job, or the IntegrityError it failed with
    (every chunk in each ``sealed`` authenticated).

    On the calling thread: sharing the chunks with the kernel's helper thread
    (as a long run of the core is) measured slower here for the ranges of a
    Parquet read (30-60 chunks each) on 2 busy cores.
    """
    results: list[bytes | IntegrityError] = []
    scratch = memoryview(bytearray(CHUNK_SIZE))
    for opened, planned, sealed in jobs:
        size = opened.head.plaintext_size
        if len(sealed) != planned.hi - planned.lo or size is None:
            results.append(IntegrityError())  # the object is shorter than its head said
            continue
        n = planned.end - planned.start
        # a small result is built in a bytearray and copied: that costs less than bytes in place
        result, out = (buf := bytearray(n), memoryview(buf)) if n <= _SMALL else _buffers.new_bytes(n)
        try:
            open_span(opened.cipher, sealed, planned.first, planned.start, planned.end, out, plaintext_size=size,
                      scratch=scratch)
        except IntegrityError as exc:
            results.append(exc)
            continue
        results.append(bytes(result) if isinstance(result, bytearray) else result)
    return results


# ---------------------------------------------------------------- cat_file / cat_ranges of the filesystem


def cat_range(fs: EnvcryptFileSystem, path: str, start: int | None, end: int | None) -> bytes:
    """Plaintext ``[start, end)`` of the object at the stripped ``path`` (fsspec's range rules)."""
    if pins(fs.target):  # S3: with its head cached, one GET pinned to its ETag (see cat_ranges)
        return cat_ranges(fs, [path], [start], [end], "raise")[0]  # type: ignore[no-any-return]
    for refresh in (False, True):
        opened = fs._open_object(path, refresh)
        if opened is None:  # a plaintext object, allowed
            return fs.target.cat_file(path, start, end)  # type: ignore[no-any-return]
        planned = plan(opened, start, end)
        try:
            small = _fetch_small(fs.target, path, planned)
            if small is not None:
                return _open_small(opened, planned, small)
            with fetch_spans(fs.target, [(path, planned.lo, planned.hi)]) as (sealed,):
                if isinstance(sealed, BaseException):
                    raise sealed
                return open_planned(opened, planned, memoryview(sealed))
        except IntegrityError:
            if refresh:
                raise
    raise IntegrityError()  # unreachable: the second pass returns or raises


def _fetch_small(target: Any, path: str, planned: Planned) -> bytes | None:
    """The sealed chunk of a range within one chunk, copied from memory or read from a local
    disk (None: another target, or more than one chunk: ``fetch_spans``)."""
    lo, hi = planned.lo, planned.hi
    if hi - lo > SEALED_CHUNK_SIZE:
        return None
    if type(target) is MemoryFileSystem:
        stored = target.store.get(path)
        if stored is None:
            raise FileNotFoundError(path)
        whole = stored.getbuffer()
        try:
            return bytes(whole[lo:hi])  # a copy: the store's buffer is not held past this call
        finally:
            whole.release()
    if isinstance(target, LocalFileSystem):
        fd = os.open(path, os.O_RDONLY)
        try:  # one pread: a regular file reads short only at its end (then the length check fails)
            return os.pread(fd, hi - lo, lo)
        finally:
            os.close(fd)
    return None


def _open_small(opened: Opened, planned: Planned, sealed: bytes) -> bytes:
    """Plaintext of a range within one chunk: that chunk opened (authenticated) whole, then sliced."""
    size = opened.head.plaintext_size
    if size is None or len(sealed) != planned.hi - planned.lo:
        raise IntegrityError()  # the object is shorter than its head said
    chunk = memoryview(bytearray(CHUNK_SIZE))
    opened.cipher.open(planned.first, memoryview(sealed), chunk, final=planned.first == size // CHUNK_SIZE)
    offset = planned.start - planned.first * CHUNK_SIZE
    return bytes(chunk[offset : offset + planned.end - planned.start])


def cat_whole(fs: EnvcryptFileSystem, path: str) -> bytes:
    """The plaintext of the object at the stripped ``path``: one read of the target, header included."""
    trusted = fs.trusted_for(path)
    whole = isinstance(fs.target, (LocalFileSystem, MemoryFileSystem))
    with fetch_spans(fs.target, [(path, 0, _WHOLE)] if whole else []) as spans:
        data = spans[0] if whole else fs.target.cat_file(path)
        if isinstance(data, BaseException):
            raise data
        view = memoryview(data).cast("B")
        want = PROBE_SIZE
        while True:  # the header's length is known from its first bytes: at most three steps
            head, more = parse_head(bytes(view[:want]), len(view))
            if more is None or more <= want:
                break
            want = more
        opened = fs._opened(path, head, trusted)
        if opened is None:
            return bytes(view)
        size = opened.head.plaintext_size
        if size is None:
            raise IntegrityError()
        return open_whole_body(opened.cipher, view[opened.head.header_size :], size)


def cat_ranges(fs: EnvcryptFileSystem, paths: list[str], starts: Any, ends: Any, on_error: str) -> list[Any]:
    """Plaintext ranges of one or more objects, each object opened once.

    The sealed chunks of all ranges are fetched together (neighbours merged):
    one ``cat_ranges`` of the target, concurrent on object stores.  When a
    range's chunks fail to authenticate because the object was replaced
    meanwhile (a rewrap), every range of that object is read again once from a
    fresh head, so the ranges of one object come from one version of it.
    ``on_error="return"`` puts each range's exception in its place; anything
    else raises the first.
    """
    if not isinstance(paths, list):
        raise TypeError("paths is a list")
    starts = starts if isinstance(starts, list) else [starts] * len(paths)
    ends = ends if isinstance(ends, list) else [ends] * len(paths)
    if len(starts) != len(paths) or len(ends) != len(paths):
        raise ValueError("paths, starts and ends differ in length")
    stripped = [fs._strip_protocol(p) for p in paths]
    out: list[Any] = [None] * len(paths)
    retry = _read_ranges(fs, stripped, starts, ends, list(range(len(paths))), out, refresh=False)
    if retry:  # failed to authenticate: once more from fresh heads (a rewrap may have moved the body)
        # every range of such an object, not only those that failed: the answer for one object
        # comes from one version of it (the ranges that did open may be of the version replaced)
        again = {stripped[i] for i in retry}
        _read_ranges(fs, stripped, starts, ends, [i for i, p in enumerate(stripped) if p in again], out,
                     refresh=True)
    if on_error != "return":
        failed = next((r for r in out if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
    return out


def _pinnable_heads(fs: EnvcryptFileSystem, paths: list[str]) -> dict[str, Head]:
    """Heads a read may use without asking the store which version is current: on S3 the
    last head cached for each path, when it is a sound envcrypt head with an ETag; every
    ranged GET then carries ``If-Match`` on that ETag, so the store answers only from
    that version (a 412 makes the read start again from a fresh head)."""
    if not pins(fs.target):
        return {}
    token = fs._fs_tok()
    found = {p: HEADS.latest(token, p) for p in paths}
    return {p: h for p, h in found.items() if h is not None and h.etag and h.encrypted and h.error is None
            and h.plaintext_size is not None and h.complete}


def _read_ranges(fs: EnvcryptFileSystem, paths: list[str], starts: list[Any], ends: list[Any], todo: list[int],
             out: list[Any], refresh: bool) -> list[int]:
    """Fill ``out`` for the ranges ``todo``; the ones that failed to authenticate (to retry)."""
    by_path: dict[str, list[int]] = {}
    for i in todo:
        by_path.setdefault(paths[i], []).append(i)
    opened: dict[str, Opened | None] = {}
    pinned = {} if refresh else _pinnable_heads(fs, list(by_path))
    asked = [p for p in by_path if p not in pinned]
    try:
        heads = dict(zip(asked, fs._heads(asked, refresh=refresh, stripped=True), strict=True)) if asked else {}
        if not refresh:  # never serve stored bytes as plaintext (or fail) on a cached head
            stale = [p for p, h in heads.items() if not h.encrypted or h.error is not None]
            heads.update(zip(stale, fs._heads(stale, refresh=True, stripped=True), strict=True))
    except Exception:
        heads = None  # one of them failed: open them one by one, for each path's own error
    for path in list(by_path):
        try:
            if path in pinned:
                opened[path] = fs._opened(path, pinned[path], fs.trusted_for(path))
            elif heads is not None:
                opened[path] = fs._opened(path, heads[path], fs.trusted_for(path))
            else:
                opened[path] = fs._open_object(path, refresh)
        except Exception as exc:
            for i in by_path.pop(path):
                out[i] = exc
    plain = [i for path, idx in by_path.items() if opened[path] is None for i in idx]
    if plain:  # plaintext objects, allowed: the target's own ranges
        got = fs.target.cat_ranges([paths[i] for i in plain], [starts[i] for i in plain],
                                     [ends[i] for i in plain], on_error="return")
        for i, data in zip(plain, got, strict=True):
            out[i] = data
    plans: dict[int, Planned] = {}
    requests: list[tuple[str, int, int]] = []
    owners: list[list[int]] = []
    for path, idx in by_path.items():
        obj = opened[path]
        if obj is None:
            continue
        for i in idx:
            try:
                plans[i] = plan(obj, starts[i], ends[i])
            except Exception as exc:
                out[i] = exc
        mine = [i for i in idx if i in plans]
        merged, where = coalesce([(plans[i].lo, plans[i].hi) for i in mine])
        base = len(requests)
        requests.extend((path, lo, hi) for lo, hi in merged)
        owners.extend([] for _ in merged)
        for i, w in zip(mine, where, strict=True):
            owners[base + w].append(i)
    retry: list[int] = []
    mark = [r[0] in pinned for r in requests]
    with fetch_spans(fs.target, [r for r, m in zip(requests, mark, strict=True) if not m]) as unpinned:
        # spans of heads taken without asking the store: each GET proves the version (If-Match)
        got = iter(pinned_ranges(fs.target, [(path, lo, hi, pinned[path].etag or "")
                                             for (path, lo, hi), m in zip(requests, mark, strict=True) if m],
                                 HEAD_CONCURRENCY))
        rest = iter(unpinned)
        fetched = [next(got) if m else next(rest) for m in mark]
        jobs: list[tuple[Opened, Planned, memoryview]] = []
        owner: list[int] = []
        try:
            for (path, lo, _), data, idx in zip(requests, fetched, owners, strict=True):
                obj = opened[path]
                for i in idx:
                    if isinstance(data, BaseException):
                        out[i] = data
                        if isinstance(data, ObjectChangedError):  # not the head's version: read again
                            retry.append(i)
                        continue
                    planned = plans[i]
                    jobs.append((obj, planned, memoryview(data)[planned.lo - lo : planned.hi - lo]))  # type: ignore[arg-type]
                    owner.append(i)
            for i, result in zip(owner, open_all(jobs), strict=True):
                out[i] = result
                if isinstance(result, IntegrityError):
                    retry.append(i)
        finally:
            for _, _, sealed in jobs:
                sealed.release()
    return retry if not refresh else []
