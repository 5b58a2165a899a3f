"""Batch AEAD over many cells: one call per run of cells, into one preallocated buffer.

Every cell is one standard AEAD operation from OpenSSL, never our own AES or
GHASH.  Two interchangeable cores produce the same bytes:

* **compiled** (the native kernel ``envcrypt._gcmbatch``, :mod:`envcrypt._kernel`,
  the same one that seals object bodies): a C loop over the cells driving OpenSSL's
  EVP AES-256-GCM / AES-256-SIV, one cipher context per call with the key set once,
  the GIL released; a long run is split over two threads;
* **pure** (``cryptography``): ``AESGCM.encrypt_into`` / ``AESSIV.encrypt_into``
  per cell, driven by ``map`` over prebuilt views (no Python bytecode per cell).

A run is described by Arrow-style offsets: cell ``i`` of the input is
``src[src_off[i]:src_off[i+1]]`` and goes to ``dst[dst_off[i]:dst_off[i+1]]``.
Cells whose ``valid`` byte is 0 are nulls and are skipped.

Randomized cells (AES-256-GCM): ``nonce(12) || ciphertext || tag(16)``, the nonce
of cell ``i`` being ``first_counter + i`` as a 96-bit big-endian integer.
Deterministic cells (AES-256-SIV, RFC 5297, one associated-data string):
``siv(16) || ciphertext``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import repeat
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

from .. import _kernel
from ..errors import IntegrityError

__all__ = ["GCM_OVERHEAD", "SIV_OVERHEAD", "NONCE_SIZE", "seal", "open_", "compiled_available", "core"]

NONCE_SIZE = 12
TAG_SIZE = 16
GCM_OVERHEAD = NONCE_SIZE + TAG_SIZE  # 28
SIV_OVERHEAD = 16
#: a run shorter than this many cells stays on the calling thread
PARALLEL_MIN_CELLS = 16384



def _native() -> Any:
    return _kernel.native()


def compiled_available() -> bool:
    return _kernel.available()


def core(name: str | None = None) -> str:
    """The core in use: ``name`` if given ("pure"/"compiled"), else the compiled one when built
    (``ENVCRYPT_KERNEL`` / ``ENVCRYPT_COLUMNS_CORE`` force one)."""
    if name is not None and name not in ("pure", "compiled"):
        raise ValueError(f"unknown columns core {name!r} (pure or compiled)")
    return _kernel.active(name)


def _run_compiled(fn: Callable[..., int], args: tuple[Any, ...], n: int) -> int:
    """Run ``fn(*args, lo, hi)`` over two halves in two threads; -1, or the first failing cell."""
    return _kernel.run_split(fn, args, n, n >= PARALLEL_MIN_CELLS and _kernel.two_cores())


# ------------------------------------------------------------------ sealing


def seal(mode: str, key: bytes, ad: bytes, src: np.ndarray, src_off: np.ndarray, valid: np.ndarray,
         dst: np.ndarray, dst_off: np.ndarray, first_counter: int = 0, *, use: str | None = None) -> None:
    """Seal every valid cell (``mode``: "gcm" or "siv")."""
    n = len(src_off) - 1
    if n <= 0:
        return
    if core(use) == "compiled":
        if mode == "siv":
            valid = _siv_empty_cells_pure(valid, src_off, 0, "seal", key, ad, src, src_off, dst, dst_off)
            if use is None and _siv_shared("seal", key, ad, src, src_off, valid, dst, dst_off):
                return
        fn = _native().gcm_seal if mode == "gcm" else _native().siv_seal
        args: tuple[Any, ...] = (key, ad, src, src_off, valid.view(np.uint8), dst, dst_off)
        if mode == "gcm":
            args += (first_counter,)
        if _run_compiled(fn, args, n) >= 0:  # pragma: no cover - OpenSSL refused an operation
            raise IntegrityError("internal error: OpenSSL failed to seal a cell")
        return
    idx = np.flatnonzero(valid)
    if not len(idx):
        return
    s_lo, s_hi = src_off[idx].tolist(), src_off[idx + 1].tolist()
    d_lo, d_hi = dst_off[idx], dst_off[idx + 1]
    src_mv, dst_mv = memoryview(src.data).cast("B"), memoryview(dst.data).cast("B")
    ins = map(src_mv.__getitem__, map(slice, s_lo, s_hi))
    if mode == "gcm":
        nonces = _counter_nonces(idx + first_counter)
        dst[(d_lo[:, None] + np.arange(NONCE_SIZE)).ravel()] = nonces.ravel()
        nonce_bytes = nonces.tobytes()
        starts = np.arange(len(idx), dtype=np.int64) * NONCE_SIZE
        nonce_iter = map(nonce_bytes.__getitem__, map(slice, starts.tolist(), (starts + NONCE_SIZE).tolist()))
        outs = map(dst_mv.__getitem__, map(slice, (d_lo + NONCE_SIZE).tolist(), d_hi.tolist()))
        deque(map(AESGCM(key).encrypt_into, nonce_iter, ins, repeat(ad), outs), maxlen=0)
    else:
        outs = map(dst_mv.__getitem__, map(slice, d_lo.tolist(), d_hi.tolist()))
        deque(map(AESSIV(key).encrypt_into, ins, repeat([ad]), outs), maxlen=0)


#: deterministic cells per piece of a run shared by the pure path and the kernel
SIV_PIECE_CELLS = 4096


def _siv_shared(op: str, key: bytes, ad: bytes, src: np.ndarray, src_off: np.ndarray, valid: np.ndarray,
                dst: np.ndarray, dst_off: np.ndarray) -> bool:
    """Deterministic cells in the "hybrid" mode: the calling thread runs ``cryptography``'s AESSIV
    while the helper thread runs the kernel, on pieces taken in turn.  OpenSSL 3.0's SIV has no way
    to start a new message under a set key but a context copy (~3.6 us a cell, mostly allocation),
    while cryptography's bundled OpenSSL starts one in ~1.3 us; the two together beat either alone.

    False (nothing done) unless the mode is "hybrid" and no other thread runs the pure path; an
    open that fails raises InvalidTag after both threads stopped (the caller zeroes ``dst``).
    """
    n = len(valid)
    if _kernel.mode() != "hybrid" or n < 2 * SIV_PIECE_CELLS or not _kernel.two_cores():
        return False
    if not _kernel.pure_turn.acquire(blocking=False):
        return False
    try:
        fn = _native().siv_seal if op == "seal" else _native().siv_open
        v8 = valid.view(np.uint8)

        def kernel(lo: int, hi: int) -> int:
            return int(fn(key, ad, src, src_off, v8, dst, dst_off, lo, hi))

        def pure(lo: int, hi: int) -> int:
            piece = (key, ad, src, src_off[lo : hi + 1], valid[lo:hi], dst, dst_off[lo : hi + 1])
            if op == "seal":
                seal("siv", *piece, use="pure")
                return -1
            try:
                open_("siv", *piece, use="pure")
            except IntegrityError:
                return lo
            return -1

        failed = _kernel.run_shared(n, SIV_PIECE_CELLS, pure, kernel)
    finally:
        _kernel.pure_turn.release()
    if failed >= 0:
        if op == "seal":  # pragma: no cover - OpenSSL refused an operation
            raise IntegrityError("internal error: OpenSSL failed to seal a cell")
        raise InvalidTag()
    return True


def _siv_empty_cells_pure(valid: np.ndarray, src_off: np.ndarray, empty_size: int, op: str,
                          *args: Any) -> np.ndarray:
    """OpenSSL 3.0's EVP layer skips a zero-length SIV update, so its SIV cannot seal or open an
    empty plaintext: those cells (empty strings) go through the pure core; the rest is returned."""
    empty = valid & (np.diff(src_off) == empty_size)
    if not empty.any():
        return valid
    run: Callable[..., None] = seal if op == "seal" else open_
    run("siv", *args[:4], empty, *args[4:], use="pure")
    return np.asarray(valid & ~empty)


def _counter_nonces(counters: np.ndarray) -> np.ndarray:
    """96-bit big-endian nonces for the given counters (< 2^64), as an (n, 12) uint8 array."""
    nonces = np.zeros((len(counters), NONCE_SIZE), np.uint8)
    nonces[:, 4:] = counters.astype(">u8").view(np.uint8).reshape(-1, 8)
    return nonces


# ------------------------------------------------------------------ opening


def open_(mode: str, key: bytes, ad: bytes, src: np.ndarray, src_off: np.ndarray, valid: np.ndarray,
          dst: np.ndarray, dst_off: np.ndarray, *, use: str | None = None) -> None:
    """Open every valid cell; IntegrityError (``dst`` zeroed) if one fails.

    The caller has checked that every non-null cell is at least the mode's overhead long and
    that each output span is the input span minus that overhead.
    """
    n = len(src_off) - 1
    if n <= 0:
        return
    try:
        if core(use) == "compiled":
            if mode == "siv":
                valid = _siv_empty_cells_pure(valid, src_off, SIV_OVERHEAD, "open", key, ad, src, src_off, dst,
                                              dst_off)
                if use is None and _siv_shared("open", key, ad, src, src_off, valid, dst, dst_off):
                    return
            fn = _native().gcm_open if mode == "gcm" else _native().siv_open
            failed = _run_compiled(fn, (key, ad, src, src_off, valid.view(np.uint8), dst, dst_off), n)
            if failed >= 0:
                raise InvalidTag()
            return
        idx = np.flatnonzero(valid)
        if not len(idx):
            return
        s_lo, s_hi = src_off[idx], src_off[idx + 1]
        src_mv, dst_mv = memoryview(src.data).cast("B"), memoryview(dst.data).cast("B")
        outs = map(dst_mv.__getitem__, map(slice, dst_off[idx].tolist(), dst_off[idx + 1].tolist()))
        if mode == "gcm":
            nonces = map(src_mv.__getitem__, map(slice, s_lo.tolist(), (s_lo + NONCE_SIZE).tolist()))
            ins = map(src_mv.__getitem__, map(slice, (s_lo + NONCE_SIZE).tolist(), s_hi.tolist()))
            deque(map(AESGCM(key).decrypt_into, nonces, ins, repeat(ad), outs), maxlen=0)
        else:
            ins = map(src_mv.__getitem__, map(slice, s_lo.tolist(), s_hi.tolist()))
            deque(map(AESSIV(key).decrypt_into, ins, repeat([ad]), outs), maxlen=0)
    except InvalidTag:
        dst[:] = 0
        raise IntegrityError() from None


# ------------------------------------------------------------------ salted randomized cells
#
# A randomized cell is ``salt(SALT_SIZE) || nonce(12) || ciphertext || tag(16)``: the salt names
# the batch key ``HKDF(CEK, salt)`` so that cells of many batches (files, partitions) can share
# one column.  Both cores run over an *interleaved* description of the column: cell 2i is the
# salt slot of row i (marked null: never sealed or opened), cell 2i + 1 its AES-GCM message.
# So the core's counter nonce of row i is ``first_counter + 2i + 1``.  The compiled core also has
# salted entry points that write and check the salt itself and give the same bytes in one pass
# (no interleaved offsets to build); a run whose cells all carry one salt opens in place that way.

SALT_SIZE = 16
SALTED_OVERHEAD = SALT_SIZE + GCM_OVERHEAD  # 44


def _interleave(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    out = np.empty(2 * len(lo), np.int64)
    out[0::2], out[1::2] = lo, hi
    return out


def seal_salted(key: bytes, salt: bytes, ad: bytes, src: np.ndarray, src_off: np.ndarray, valid: np.ndarray,
                dst: np.ndarray, dst_off: np.ndarray, first_row: int = 0, *, use: str | None = None) -> None:
    """Seal every valid cell as ``salt || nonce || ciphertext || tag`` under ``key`` (the batch key of
    ``salt``); the nonce of row ``first_row + i`` is ``2 * (first_row + i) + 1`` (96-bit big-endian)."""
    n = len(valid)
    if n == 0:
        return
    if len(salt) != SALT_SIZE:
        raise ValueError(f"a salt is {SALT_SIZE} bytes")
    if core(use) == "compiled":  # the same bytes in one pass, without the interleaved description
        if _run_compiled(_native().gcm_seal_salted, (key, salt, ad, src, src_off, valid.view(np.uint8), dst, dst_off,
                                              first_row), n) >= 0:  # pragma: no cover - OpenSSL refused
            raise IntegrityError("internal error: OpenSSL failed to seal a cell")
        return
    starts = dst_off[:-1]
    # cell 2i: [start_i, start_i + SALT_SIZE) (null); cell 2i + 1: the AES-GCM message
    d2 = np.empty(2 * n + 1, np.int64)
    d2[0::2] = dst_off
    d2[1:-1:2] = starts + np.where(valid, SALT_SIZE, 0)
    s2 = np.empty(2 * n + 1, np.int64)
    s2[0::2] = src_off
    s2[1:-1:2] = src_off[:-1]
    v2 = np.zeros(2 * n, np.bool_)
    v2[1::2] = valid
    seal("gcm", key, ad, src, s2, v2, dst, d2, 2 * first_row, use=use)
    idx = np.flatnonzero(valid)
    if len(idx):
        slots = np.lib.stride_tricks.as_strided(dst, shape=(len(dst) - SALT_SIZE + 1, SALT_SIZE),
                                                strides=(1, 1), writeable=True)
        slots[starts[idx]] = np.frombuffer(salt, np.uint8)


def salts_of(src: np.ndarray, src_off: np.ndarray, valid: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """The distinct salts of the valid cells (each at least SALTED_OVERHEAD long), and for each
    cell the index of its salt in that list (-1 for a null)."""
    group = np.full(len(valid), -1, np.int64)
    idx = np.flatnonzero(valid)
    if not len(idx):
        return [], group
    windows = np.lib.stride_tricks.sliding_window_view(src, SALT_SIZE)
    salts = np.ascontiguousarray(windows[src_off[idx]]).view(np.dtype((np.void, SALT_SIZE))).ravel()
    if (salts == salts[0]).all():  # the common case: one batch
        group[idx] = 0
        return [salts[0].tobytes()], group
    distinct, inverse = np.unique(salts, return_inverse=True)
    group[idx] = inverse.ravel()
    return [s.tobytes() for s in distinct], group


def open_salted(keys: Callable[[bytes], bytes], ad: bytes, src: np.ndarray, src_off: np.ndarray,
                valid: np.ndarray, dst: np.ndarray, dst_off: np.ndarray, *, use: str | None = None) -> None:
    """Open every valid salted cell, each under ``keys(its salt)``; IntegrityError (``dst`` zeroed)
    if one fails.  The caller has checked that every valid cell is at least SALTED_OVERHEAD long
    and that each output span is the input span minus SALTED_OVERHEAD."""
    if core(use) == "compiled":
        first = int(np.argmax(valid)) if len(valid) else 0
        if not len(valid) or not valid[first]:
            return
        start = int(src_off[first])
        salt = src[start : start + SALT_SIZE].tobytes()
        # the common case, one batch: every cell opened in place under the one batch key
        if _native().salt_mismatch(salt, src, src_off, valid.view(np.uint8)) < 0:
            if _run_compiled(_native().gcm_open_salted, (keys(salt), salt, ad, src, src_off, valid.view(np.uint8), dst,
                                                  dst_off), len(valid)) >= 0:
                dst[:] = 0
                raise IntegrityError()
            return
    salts, group = salts_of(src, src_off, valid)
    if not salts:
        return
    if len(salts) == 1:
        order = np.flatnonzero(valid)
        bounds = [0, len(order)]
    else:
        order = np.argsort(group, kind="stable")[int(np.count_nonzero(group < 0)):]
        bounds = np.searchsorted(group[order], np.arange(len(salts) + 1)).tolist()
    try:
        for g, salt in enumerate(salts):
            idx = order[bounds[g] : bounds[g + 1]]
            # the cells of this salt, in row order, as cells 0, 2, 4, ... with null gaps between
            s2 = _interleave(src_off[idx] + SALT_SIZE, src_off[idx + 1])
            d2 = _interleave(dst_off[idx], dst_off[idx + 1])
            v2 = np.zeros(len(s2) - 1, np.bool_)
            v2[0::2] = True
            open_("gcm", keys(salt), ad, src, s2, v2, dst, d2, use=use)
    except IntegrityError:
        dst[:] = 0
        raise
