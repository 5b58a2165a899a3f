"""The vectorized C2SP chunked-encryption core (Cobblestone-256).

Only the batching is ours: every AES-GCM operation is one call of
``cryptography``'s ``AESGCM.encrypt_into`` / ``decrypt_into`` on one 16 KiB
chunk, and the key derivation is ``cryptography``'s HKDF-Expand (SHA-512).
What this module adds is the driving:

- a run of chunks is sealed or opened with one ``map`` over prebuilt nonce and
  buffer views, straight into the caller's preallocated output: no per-chunk
  ``bytes`` objects, no concatenation;
- a long run is split into contiguous segments run on a shared thread pool
  (the AESGCM calls release the GIL), so both cores work on one object;
- a failed open zeroes the whole output span before raising, so no
  unauthenticated plaintext is ever left in a caller's buffer.

Spec: https://c2sp.org/chunked-encryption, summarised in FORMAT.md.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import repeat
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .errors import IntegrityError, WrongKeyError
from .format import (
    CHUNK_SIZE,
    COMMITMENT_SIZE,
    MAX_CHUNKS,
    SALT_SIZE,
    SEALED_CHUNK_SIZE,
    TAG_SIZE,
)

__all__ = [
    "AEAD_NAME",
    "DEK_SIZE",
    "ChunkCipher",
    "derive",
    "new_message",
    "open_message",
    "open_span",
    "set_threads",
]

AEAD_NAME = b"AEAD_AES_256_GCM"
DEK_SIZE = 32  # the C2SP input key: as long as the AEAD key
NONCE_SIZE = 12
_INFO_PREFIX = b"c2sp.org/chunked-encryption@v1+" + AEAD_NAME + b"\x00"
_DERIVED_SIZE = DEK_SIZE + NONCE_SIZE + COMMITMENT_SIZE

#: runs shorter than this many chunks per thread stay on the calling thread
PARALLEL_MIN_CHUNKS = 32  # 512 KiB
#: chunks per ``map`` call: small enough that the views stay in cache
SUB_BATCH_CHUNKS = 64

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
#: threads per long run: every chunk is one AESGCM call that takes the GIL to start, so
#: past a few threads they queue on the GIL instead of adding throughput
DEFAULT_MAX_THREADS = 4
_threads = int(os.environ.get("ENVCRYPT_THREADS", "0")) or min(os.cpu_count() or 1, DEFAULT_MAX_THREADS)


def set_threads(count: int) -> None:
    """Set how many threads seal/open one long run of chunks (1 = no thread pool)."""
    global _pool, _threads
    if count < 1:
        raise ValueError("thread count must be >= 1")
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _threads = None, count


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, _threads - 1), thread_name_prefix="envcrypt")
        return _pool


#: GIL switch interval while a parallel run is in flight (0 = leave the interpreter's alone)
PARALLEL_SWITCH_INTERVAL = float(os.environ.get("ENVCRYPT_SWITCH_INTERVAL", "2e-5"))
_switch_users = 0
_switch_saved = 0.0


@contextlib.contextmanager
def _fast_switching() -> Iterator[None]:
    """Shorten the GIL switch interval while threads share one run of chunks.

    Each chunk is one AESGCM call that releases the GIL for a couple of
    microseconds; with the default 5 ms interval a thread waiting for the GIL
    rarely gets it in time, and two threads run slower than one.  The interval
    is restored when the last parallel run ends.
    """
    global _switch_users, _switch_saved
    if PARALLEL_SWITCH_INTERVAL <= 0:
        yield
        return
    with _pool_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, PARALLEL_SWITCH_INTERVAL))
        _switch_users += 1
    try:
        yield
    finally:
        with _pool_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


def _forget_pool_after_fork() -> None:
    # the child has none of the parent's threads, and the lock may have been held
    global _pool, _pool_lock, _switch_users
    _pool, _pool_lock, _switch_users = None, threading.Lock(), 0


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def derive(dek: bytes, salt: bytes, context: bytes) -> tuple[bytes, bytes, bytes]:
    """C2SP key derivation: ``(aead_key, base_nonce, commitment)`` from the DEK, salt and context."""
    if len(dek) != DEK_SIZE:
        raise ValueError("the data key must be 32 bytes")
    if len(salt) != SALT_SIZE:
        raise ValueError("the salt must be 24 bytes")
    okm = HKDFExpand(hashes.SHA512(), _DERIVED_SIZE, _INFO_PREFIX + salt + context).derive(dek)
    return okm[:DEK_SIZE], okm[DEK_SIZE : DEK_SIZE + NONCE_SIZE], okm[DEK_SIZE + NONCE_SIZE :]


def new_message(
    dek: bytes, context: bytes, *, _salt: bytes | None = None
) -> tuple[bytes, ChunkCipher]:
    """Start a message: return its 56-byte prefix (salt || commitment) and its chunk cipher.

    ``_salt`` is a private seam for known-answer vectors; production salts are random.
    """
    salt = os.urandom(SALT_SIZE) if _salt is None else _salt
    key, base_nonce, commitment = derive(dek, salt, context)
    return salt + commitment, ChunkCipher(key, base_nonce)


def open_message(dek: bytes, context: bytes, prefix: bytes) -> ChunkCipher:
    """Check a message's key commitment and return its chunk cipher.

    Raises WrongKeyError when the commitment does not match (wrong DEK or wrong
    context), before any chunk is decrypted.
    """
    if len(prefix) != SALT_SIZE + COMMITMENT_SIZE:
        raise IntegrityError()
    if len(dek) != DEK_SIZE:  # a forged or foreign slot unwrapped to something else
        raise WrongKeyError("the data key does not match this object's key commitment")
    key, base_nonce, commitment = derive(dek, bytes(prefix[:SALT_SIZE]), context)
    if not hmac.compare_digest(commitment, bytes(prefix[SALT_SIZE:])):
        raise WrongKeyError("the data key does not match this object's key commitment")
    return ChunkCipher(key, base_nonce)


class ChunkCipher:
    """The derived AES-GCM key and base nonce of one message.

    Seals and opens runs of consecutive chunks into preallocated buffers.  It
    holds key material, so it has no informative repr and refuses to pickle.
    """

    __slots__ = ("_aead", "_base")

    def __init__(self, aead_key: bytes, base_nonce: bytes) -> None:
        self._aead = AESGCM(aead_key)
        self._base = int.from_bytes(base_nonce, "big")

    def __repr__(self) -> str:
        return "<ChunkCipher>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("ChunkCipher holds key material and cannot be pickled")

    def nonce(self, chunk_index: int) -> bytes:
        """The nonce of chunk ``chunk_index``: base nonce XOR the big-endian counter."""
        if not 0 <= chunk_index < MAX_CHUNKS:
            raise IntegrityError()
        return (self._base ^ chunk_index).to_bytes(NONCE_SIZE, "big")

    # ------------------------------------------------------------------ runs

    def seal(self, first_chunk: int, src: memoryview, dst: memoryview, final: bool) -> int:
        """Seal plaintext ``src`` as chunks ``first_chunk, ...`` into ``dst``; return bytes written.

        ``src`` is a whole number of full chunks, followed (when ``final``) by
        the short final chunk, which may be empty.
        """
        full, tail = divmod(len(src), CHUNK_SIZE)
        if not final and tail:
            raise ValueError("a non-final run must hold whole chunks")
        count = full + 1 if final else full
        self._check_counter(first_chunk, count)
        out_size = len(src) + count * TAG_SIZE
        if len(dst) < out_size:
            raise ValueError("output buffer too small")
        self._run(self._aead.encrypt_into, first_chunk, count, src, CHUNK_SIZE, dst[:out_size], SEALED_CHUNK_SIZE)
        return out_size

    def open(self, first_chunk: int, src: memoryview, dst: memoryview, final: bool) -> int:
        """Open sealed chunks ``src`` (chunk ``first_chunk`` onwards) into ``dst``; return bytes written.

        When ``final`` the last chunk in ``src`` is the message's final chunk
        and must be short; otherwise ``src`` holds whole sealed chunks only.
        Any failure zeroes ``dst`` and raises IntegrityError.
        """
        full, tail = divmod(len(src), SEALED_CHUNK_SIZE)
        if final:
            if tail < TAG_SIZE:
                raise IntegrityError()
            count = full + 1
        else:
            if tail:
                raise IntegrityError()
            count = full
        self._check_counter(first_chunk, count)
        out_size = len(src) - count * TAG_SIZE
        if len(dst) < out_size:
            raise ValueError("output buffer too small")
        try:
            self._run(
                self._aead.decrypt_into, first_chunk, count, src, SEALED_CHUNK_SIZE, dst[:out_size], CHUNK_SIZE
            )
        except InvalidTag:
            _zero(dst[:out_size])
            raise IntegrityError() from None
        return out_size

    @staticmethod
    def _check_counter(first_chunk: int, count: int) -> None:
        if first_chunk < 0 or first_chunk + count > MAX_CHUNKS:
            raise IntegrityError()

    def _run(
        self,
        op: Callable[..., int],
        first: int,
        count: int,
        src: memoryview,
        src_step: int,
        dst: memoryview,
        dst_step: int,
    ) -> None:
        if count == 0:
            return
        workers = min(_threads, count // PARALLEL_MIN_CHUNKS)
        if workers <= 1:
            self._segment(op, first, 0, count, src, src_step, dst, dst_step)
            return
        bounds = [count * i // workers for i in range(workers + 1)]
        pool = _executor()
        error: BaseException | None = None
        with _fast_switching():
            futures: list[Future[None]] = []
            inline = [(bounds[0], bounds[1])]
            for lo, hi in zip(bounds[1:-1], bounds[2:], strict=True):
                try:
                    futures.append(pool.submit(self._segment, op, first, lo, hi, src, src_step, dst, dst_step))
                except RuntimeError:  # the interpreter is shutting down: no new work; run it here
                    inline.append((lo, hi))
            try:
                for lo, hi in inline:
                    self._segment(op, first, lo, hi, src, src_step, dst, dst_step)
            except BaseException as exc:  # wait for the others before raising
                error = exc
            for future in futures:
                try:
                    future.result()
                except BaseException as exc:
                    error = error or exc
        if error is not None:
            raise error

    def _segment(
        self,
        op: Callable[..., int],
        first: int,
        lo: int,
        hi: int,
        src: memoryview,
        src_step: int,
        dst: memoryview,
        dst_step: int,
    ) -> None:
        """Chunks ``lo..hi-1`` of the run, in sub-batches: one C-level ``map`` over prebuilt views each."""
        # ``src`` and ``dst`` end exactly where the run ends, so slicing at the
        # fixed strides gives the short final chunk its right length on both sides.
        base = self._base
        for start in range(lo, hi, SUB_BATCH_CHUNKS):
            stop = min(start + SUB_BATCH_CHUNKS, hi)
            nonces = [(base ^ i).to_bytes(NONCE_SIZE, "big") for i in range(first + start, first + stop)]
            ins = [src[o : o + src_step] for o in range(start * src_step, stop * src_step, src_step)]
            outs = [dst[o : o + dst_step] for o in range(start * dst_step, stop * dst_step, dst_step)]
            deque(map(op, nonces, ins, repeat(None, stop - start), outs), maxlen=0)


def open_span(
    cipher: ChunkCipher,
    sealed: memoryview,
    first_chunk: int,
    start: int,
    end: int,
    out: memoryview,
    *,
    plaintext_size: int,
    scratch: memoryview,
) -> tuple[int, int] | None:
    """Open every sealed chunk in ``sealed`` and place plaintext bytes ``[start, end)`` into ``out``.

    ``sealed`` holds the sealed chunks ``first_chunk, first_chunk + 1, ...``
    exactly as stored (the message's final chunk, if included, is short).
    Every chunk in it is authenticated, also one that lies past ``end`` (the
    empty final chunk, when a read reaches the end).  Chunks wholly inside the
    range open straight into ``out`` in one batch; a chunk cut by the range
    opens into ``scratch`` (one chunk long) and its overlap is copied.

    Returns ``(chunk_index, plaintext_length)`` of the last chunk left whole in
    ``scratch``, or None, so a caller can keep it for the next small read.
    """
    final_index = plaintext_size // CHUNK_SIZE
    last = first_chunk + -(-len(sealed) // SEALED_CHUNK_SIZE) - 1

    def chunk_end(index: int) -> int:
        return min((index + 1) * CHUNK_SIZE, plaintext_size)

    def run(i: int, j: int, dst: memoryview) -> int:
        lo = (i - first_chunk) * SEALED_CHUNK_SIZE
        hi = min((j + 1 - first_chunk) * SEALED_CHUNK_SIZE, len(sealed))
        return cipher.open(i, sealed[lo:hi], dst, final=j == final_index)

    kept: tuple[int, int] | None = None
    i = first_chunk
    while i <= last:
        j = i
        while j <= last and j * CHUNK_SIZE >= start and chunk_end(j) <= end:
            j += 1
        if j > i:  # chunks i..j-1 lie wholly inside [start, end)
            run(i, j - 1, out[i * CHUNK_SIZE - start : chunk_end(j - 1) - start])
            i = j
            continue
        n = run(i, i, scratch)
        lo, hi = max(start, i * CHUNK_SIZE), min(end, chunk_end(i))
        if hi > lo:
            out[lo - start : hi - start] = scratch[lo - i * CHUNK_SIZE : hi - i * CHUNK_SIZE]
        kept = (i, n)
        i += 1
    return kept


_ZEROS = memoryview(bytes(1 << 20))


def _zero(view: memoryview) -> None:
    """Overwrite a (possibly large) writable view with zeros."""
    step = len(_ZEROS)
    for offset in range(0, len(view), step):
        n = min(step, len(view) - offset)
        view[offset : offset + n] = _ZEROS[:n]
