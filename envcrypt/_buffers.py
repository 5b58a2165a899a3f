"""Fresh output buffers for the one-shot ``bytes`` API.

``encrypt``/``decrypt`` must return a new ``bytes`` object.  Building it with
``bytes(bytearray)`` would pay twice for fresh memory (first touch of every
page, then a copy); instead, on CPython, we use the C API's documented way of
building a bytes object in place: ``PyBytes_FromStringAndSize(NULL, n)``
returns an uninitialised object that the creator may fill before anyone else
sees it.  For large sizes we also ask the kernel for transparent huge pages
(``madvise(MADV_HUGEPAGE)``), which cuts page faults on the fresh memory 512x.

Elsewhere (PyPy, or if ctypes is unavailable) we fall back to a bytearray and
one copy.  Either way the caller gets ``(result, writable_view)`` and must
fill the view completely before returning ``result``.

Sources already in memory (bytes-like objects, mmaps, ``io.BytesIO``) are read
in place: :func:`whole_view` gives a reader their memory, so spans are decrypted
from it without a copy.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["new_bytes", "finish", "ViewFile", "whole_view", "is_private", "zero"]

_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_HUGE_MIN = 8 << 20  # below this, page faults are cheap enough


def _make() -> Callable[[int], tuple[bytes, memoryview]] | None:
    if sys.implementation.name != "cpython":
        return None
    try:
        import ctypes
    except ImportError:  # pragma: no cover
        return None
    new = ctypes.pythonapi.PyBytes_FromStringAndSize
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    as_string = ctypes.pythonapi.PyBytes_AsString
    as_string.restype = ctypes.c_void_p
    as_string.argtypes = [ctypes.py_object]
    madvise: Callable[..., int] | None = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            madvise = libc.madvise
            madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            madvise.restype = ctypes.c_int
        except (OSError, AttributeError):  # pragma: no cover
            madvise = None

    def new_bytes(size: int) -> tuple[bytes, memoryview]:
        result: bytes = new(None, size)
        address = as_string(result)
        if madvise is not None and size >= _HUGE_MIN:
            start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
            end = (address + size) // _HUGE_PAGE * _HUGE_PAGE
            if end > start:
                madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: failure is harmless
        view = memoryview((ctypes.c_char * size).from_address(address)).cast("B")
        return result, view

    return new_bytes


_new_bytes = _make()


def new_bytes(size: int) -> tuple[bytes | bytearray, memoryview]:
    """A fresh object of ``size`` bytes and a writable view of its memory.

    On CPython the object is ``bytes``; elsewhere it is a ``bytearray`` that
    :func:`finish` turns into ``bytes``.
    """
    if size == 0:
        return b"", memoryview(bytearray(0))
    if _new_bytes is not None:
        return _new_bytes(size)
    buf = bytearray(size)
    return buf, memoryview(buf)


def finish(result: bytes | bytearray) -> bytes:
    return result if isinstance(result, bytes) else bytes(result)


def is_private(data: Any) -> bool:
    """Whether ``data`` is memory of this process only (bytes, bytearray, or a view of one):
    nothing outside the process can change it while AES-GCM reads it."""
    obj = data.obj if isinstance(data, memoryview) else data
    return isinstance(obj, (bytes, bytearray))


class ViewFile(io.RawIOBase):
    """A seekable, read-only binary file over a bytes-like object (bytes, bytearray, memoryview,
    mmap).  For process-private memory (:attr:`private`) a reader decrypts straight from
    :attr:`view` instead of copying every span first.  A shared mapping (an mmap of a file in
    storage) is read by copy: another process could rewrite it between OpenSSL's GHASH pass and
    its CTR pass over the same bytes, so plaintext would not be what the tag authenticated.
    Closing it releases the view."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.view = memoryview(data).cast("B")
        self.private = is_private(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self.view)}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        n = max(0, min(len(out), len(self.view) - self._pos))
        out[:n] = self.view[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self.view.release()
        super().close()


def whole_view(raw: Any) -> Callable[[], memoryview] | None:
    """For a source whose bytes are already in this process's private memory, a function giving
    a view of all of them (no copy); None for anything else (read it into a private buffer)."""
    if isinstance(raw, ViewFile) and raw.private:
        return lambda: raw.view[:]  # a view of its own, released after each span
    if type(raw) is io.BytesIO:
        # getvalue() shares the BytesIO's buffer (no copy) unless a buffer export is active
        return lambda: memoryview(raw.getvalue())
    return None


_ZEROS = memoryview(bytes(1 << 20))


def zero(view: memoryview) -> None:
    """Overwrite a (possibly large) writable view with zeros."""
    step = len(_ZEROS)
    for offset in range(0, len(view), step):
        n = min(step, len(view) - offset)
        view[offset : offset + n] = _ZEROS[:n]
