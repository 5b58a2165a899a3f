"""The streams' batch buffers, reused instead of allocated per stream.

An :class:`~envcrypt.streams.EncryptingWriter` stages plaintext in a 4 MiB buffer and seals
into a 4 MiB output buffer; a reader of a file fetches sealed spans into a buffer of the same
order.  ``bytearray(n)`` zeroes all n bytes, and the first write to each page then faults it
in: about 4 ms per writer on the reference machine, paid again by every ``fs.open(p, "wb")``
of a 1 KiB object and about a tenth of the time of sealing 256 MiB.

Two things remove that cost:

* a buffer is created uninitialised (the C API's ``PyByteArray_FromStringAndSize(NULL, n)``),
  so only the pages a stream really writes are ever touched: a stream reads from its buffers
  only the bytes it wrote into them;
* a closed stream gives its buffers back to a small pool (at most :data:`KEEP` idle buffers of
  each size, so at most 2 x 2 x ~4 MiB stay allocated while no stream is open), and the next
  stream takes them, already faulted in.

A buffer that held plaintext is given back with the length it was written up to, and that
much is overwritten with zeros before it is pooled: plaintext of a closed stream does not stay
in the pool.  Sealed bytes (ciphertext) are not wiped.

Buffers passed to a sink's ``write`` are reused after it returns, which is the ``io``
contract (a ``write`` may use ``b`` only during the call).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from envcrypt import _buffers

__all__ = ["take", "give", "idle_bytes", "KEEP"]

#: idle buffers kept per size
KEEP = 2

_lock = threading.Lock()
_idle: dict[int, list[bytearray]] = {}


def _make_uninitialised() -> Callable[[int], bytearray]:
    if sys.implementation.name == "cpython":
        try:
            import ctypes

            new = ctypes.pythonapi.PyByteArray_FromStringAndSize
            new.restype = ctypes.py_object
            new.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]

            def uninitialised(size: int) -> bytearray:
                buf: bytearray = new(None, size)
                return buf

            return uninitialised
        except (ImportError, AttributeError):  # pragma: no cover - no ctypes
            pass
    return bytearray  # pragma: no cover - other interpreters: zeroed, as before


_new = _make_uninitialised()


def take(size: int) -> bytearray:
    """A buffer of exactly ``size`` bytes with unspecified contents: read only what you write."""
    with _lock:
        idle = _idle.get(size)
        if idle:
            return idle.pop()
    return _new(size)


def give(buf: bytearray, plaintext_up_to: int = 0) -> None:
    """Return ``buf`` to the pool; its first ``plaintext_up_to`` bytes are wiped first.

    The caller must not use ``buf`` afterwards.  A buffer that still has a view (one kept by
    a traceback's frame after a sink raised, say) is wiped but not pooled: that view would
    see the next stream's bytes.
    """
    if not buf:
        return
    if plaintext_up_to:
        with memoryview(buf) as whole:
            _buffers.zero(whole[:plaintext_up_to])
    try:  # growing it by one byte fits in its allocation, and fails while any view of it lives
        buf.append(0)
        del buf[-1]
    except BufferError:
        return
    size = len(buf)
    with _lock:
        idle = _idle.setdefault(size, [])
        if len(idle) < KEEP:
            idle.append(buf)


def idle_bytes() -> int:
    """Bytes held by idle pooled buffers."""
    with _lock:
        return sum(len(b) for bufs in _idle.values() for b in bufs)


def _empty_after_fork() -> None:
    # another thread of the parent may have held the lock at fork; the child starts empty
    global _lock, _idle
    _lock, _idle = threading.Lock(), {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_empty_after_fork)
