"""The optional native batch kernel (``envcrypt._gcmbatch``) and how a run is shared by two cores.

One mechanism serves object bodies (:mod:`envcrypt.chunked`: C2SP chunks) and encrypted columns
(:mod:`envcrypt.columns`: cells): a C loop over many AEAD messages under one key, each message
one standard OpenSSL EVP operation, the GIL released for the whole call.  It is built at install
when a C compiler and the OpenSSL headers exist; otherwise (or when forced) the pure path runs,
which gives the same bytes through ``cryptography`` (tests compare them).

Modes (``ENVCRYPT_KERNEL`` for the process, :func:`use` at run time; ``ENVCRYPT_COLUMNS_CORE``
is the older name of the same switch):

* ``pure``: ``cryptography`` only, on the calling thread;
* ``compiled``: the native kernel only, on the calling thread and one helper thread;
* ``hybrid`` (the default when the kernel is built): for object bodies the calling thread runs
  ``cryptography`` (whose bundled OpenSSL is the faster one per core) while the helper thread
  runs the native kernel.  Cells always use the kernel (per-cell Python would dominate).

A shared run of chunks is cut into pieces that both threads claim from one atomic counter
(:func:`run_claimed`): the helper claims and runs its pieces inside one native call, never
taking the GIL between them.  Cells, and builds without the claim counter, share a run through
one iterator of pieces (:func:`run_shared`), where the helper takes the GIL between pieces.
Either way a slow or busy helper (another run's pieces) never makes a caller wait for work it
could do itself.  Nothing changes interpreter-wide settings.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any

__all__ = ["available", "mode", "active", "use", "module", "run_split", "run_shared", "run_claimed", "await_helper",
           "shared_runs", "openssl_version"]

_native: ModuleType | None
try:
    _native = importlib.import_module("envcrypt._gcmbatch")
except ImportError:  # no compiler or no OpenSSL headers at install: the pure path
    _native = None

_CHOICES = ("pure", "compiled", "hybrid")
_forced = os.environ.get("ENVCRYPT_KERNEL", "") or os.environ.get("ENVCRYPT_COLUMNS_CORE", "")
if _forced and _forced not in _CHOICES:
    raise ValueError(f"ENVCRYPT_KERNEL must be pure, compiled or hybrid, not {_forced!r}")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
#: held by the one thread that runs the pure path on a shared run ("hybrid"): two threads
#: making many short cryptography calls would queue on the GIL, so others use the kernel
pure_turn = threading.Lock()


def available() -> bool:
    """Whether the native kernel is built in this install."""
    return _native is not None


def mode(name: str | None = None) -> str:
    """The mode to use: ``name`` if given, else the forced one, else "hybrid" when the kernel
    is built and "pure" when it is not."""
    choice = name or _forced or ("hybrid" if _native is not None else "pure")
    if choice not in _CHOICES:
        raise ValueError(f"unknown kernel mode {choice!r} (pure, compiled or hybrid)")
    if choice != "pure" and _native is None:
        raise ImportError("the native kernel (envcrypt._gcmbatch) is not built in this install")
    return choice


def active(name: str | None = None) -> str:
    """For cells: "compiled" when the kernel is used (modes compiled and hybrid), else "pure"."""
    return "pure" if mode(name) == "pure" else "compiled"


def use(name: str | None) -> None:
    """Force "pure", "compiled" or "hybrid" for this process (None: back to the default)."""
    global _forced
    if name is not None:
        mode(name)  # refuses an unknown name or a kernel that is not built
    _forced = name or ""


def native() -> Any:
    """The native module, whatever the mode (ImportError when it is not built)."""
    if _native is None:
        raise ImportError("the native kernel (envcrypt._gcmbatch) is not built in this install")
    return _native


def module() -> Any:
    """The native module unless the mode is "pure"."""
    return _native if mode() != "pure" else None


def openssl_version() -> str | None:
    """The OpenSSL the native kernel runs with (None without the kernel)."""
    return None if _native is None else str(_native.openssl_version())


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="envcrypt-kernel")
        return _pool


def _forget_pool_after_fork() -> None:
    # the child has none of the parent's threads, and the lock may have been held
    global _pool, _pool_lock, pure_turn
    _pool, _pool_lock, pure_turn = None, threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on (taskset, cgroups)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_CPUS = _usable_cpus()


def two_cores() -> bool:
    """Whether a helper thread can run beside the caller (at least two usable CPUs)."""
    return _CPUS >= 2


def run_split(fn: Callable[..., int], args: tuple[Any, ...], n: int, split: bool) -> int:
    """``fn(*args, lo, hi)`` over ``[0, n)`` (each call releasing the GIL for its whole range),
    in two halves on the calling and the helper thread when ``split``; -1 or the first failed index."""
    def part(lo: int, hi: int) -> int:
        return int(fn(*args, lo, hi))

    return run_shared(n, -(-n // 2), part, part if split and n >= 2 else None)


def run_shared(
    n: int, piece: int, caller: Callable[[int, int], int], helper: Callable[[int, int], int] | None
) -> int:
    """Items ``[0, n)`` in pieces of at most ``piece``, taken in order by the calling thread
    (``caller``) and, when given, the helper thread (``helper``); -1, or the smallest failed
    index reported.

    Each function takes ``(lo, hi)`` and returns -1 or the first index in it that failed.
    Pieces shrink towards the end of the run (a quarter of what is left, down to a quarter of
    ``piece``), so the thread that finishes first waits for little work of the other's.
    """
    if helper is None or n <= piece:
        return caller(0, n)
    pieces = iter(_pieces(n, piece))  # next() on it is atomic: each piece goes to one thread
    failed: list[int] = []

    def work(fn: Callable[[int, int], int]) -> None:
        for lo, hi in pieces:
            bad = fn(lo, hi)
            if bad >= 0:
                failed.append(bad)

    try:
        future = _executor().submit(work, helper)
    except RuntimeError:  # the interpreter is shutting down: no new work, so run it all here
        return caller(0, n)
    try:
        work(caller)
    finally:
        await_helper(future, lambda: deque(pieces, maxlen=0))
    return min(failed) if failed else -1


def shared_runs() -> bool:
    """Whether the kernel can share a run through a claim counter (:func:`run_claimed`)."""
    return _native is not None and hasattr(_native, "claim")


def run_claimed(
    n: int, piece: int, caller: Callable[[int, int], int], helper: Callable[[bytearray, int], int] | None
) -> int:
    """Items ``[0, n)`` shared by the calling thread and the helper thread through one claim
    counter; -1, or the smallest failed index reported.

    The caller claims a piece at a time (``claim``, a few hundred nanoseconds) and runs
    ``caller(lo, hi)``; ``helper(counter, piece)`` is one native call (``chunk_*_shared``)
    that claims and runs pieces with the GIL released until none is left.  So the helper never
    waits for the GIL between pieces: with :func:`run_shared` it had to take the GIL back after
    every piece, from a caller that releases it only for a few microseconds at a time, and on
    a busy machine lost milliseconds per piece.  Pieces shrink towards the end of the run as
    in :func:`run_shared`.  If the caller fails, the rest of the run is claimed away so the
    helper stops early; either way the helper has finished before this returns (the buffers
    are the caller's again).
    """
    if helper is None or n <= piece or _native is None:
        return caller(0, n)
    counter = bytearray(8)  # the claim counter: the next unclaimed item
    claim = _native.claim
    failed: list[int] = []
    try:
        future = _executor().submit(helper, counter, piece)
    except RuntimeError:  # the interpreter is shutting down: no new work, so run it all here
        return caller(0, n)
    def claim_the_rest() -> None:  # the helper stops at its next claim
        while claim(counter, n, piece) is not None:
            pass

    try:
        while (got := claim(counter, n, piece)) is not None:
            bad = caller(*got)
            if bad >= 0:
                failed.append(bad)
    except BaseException:
        claim_the_rest()
        raise
    finally:
        bad = await_helper(future, claim_the_rest)
        if bad is not None and bad >= 0:
            failed.append(bad)
    return min(failed) if failed else -1


def await_helper(future: Future[Any], stop: Callable[[], object]) -> Any:
    """The helper's result once it has finished (None if it never started), waiting on through
    interruptions.

    An exception raised into the waiting thread (Ctrl-C, a signal handler's timeout) must not
    end the wait: the helper would still be reading and writing the run's buffers, which the
    caller then hands back (a stream's pooled batch buffers go to the next stream; a failed
    open's output is zeroed only after this).  So an interruption calls ``stop`` (no further
    pieces for the helper), the wait goes on, and the first interruption is raised after.
    """
    interruption: BaseException | None = None
    while True:
        try:
            if interruption is not None:
                stop()
            result = None if future.cancel() else future.result()
            break
        except BaseException as exc:
            if future.done():  # the helper's own failure: it has finished
                if interruption is not None:
                    raise interruption from exc
                raise
            interruption = interruption or exc
    if interruption is not None:
        raise interruption
    return result


def _pieces(n: int, piece: int) -> list[tuple[int, int]]:
    smallest = max(1, piece // 4)
    out, lo = [], 0
    while lo < n:
        hi = min(n, lo + max(smallest, min(piece, (n - lo) // 4)))
        out.append((lo, hi))
        lo = hi
    return out
