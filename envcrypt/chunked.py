"""The vectorized C2SP chunked-encryption core (Cobblestone-256).

Only the batching is ours: every AES-GCM operation is one standard AEAD call on
one 16 KiB chunk, and the key derivation is ``cryptography``'s HKDF-Expand
(SHA-512).  What this module adds is the driving, on one of two paths that give
the same bytes (:mod:`envcrypt._kernel`):

- **pure**: ``cryptography``'s ``AESGCM.encrypt_into`` / ``decrypt_into`` per
  chunk, driven by one ``map`` over prebuilt nonces and views, on the calling
  thread only (each call takes the GIL to start, so two threads on 16 KiB calls
  fight for it and run slower than one);
- **native kernel** (``envcrypt._gcmbatch``, OpenSSL EVP AES-GCM): one call
  seals or opens a piece of many chunks with the GIL released.  A run of at
  least two pieces is shared with a helper thread that runs the kernel, while
  the calling thread runs the pure path ("hybrid", the default when the kernel
  is built) or the kernel too ("compiled").  Only one thread at a time runs the
  pure path on a shared run; other callers run the kernel, so concurrent
  streams never queue on the GIL per chunk.

Either way the output goes straight into the caller's preallocated buffer (no
per-chunk ``bytes``, no concatenation), no interpreter-wide setting is touched,
and a failed open zeroes the whole output span before raising, so no
unauthenticated plaintext is ever left in a caller's buffer.

Spec: https://c2sp.org/chunked-encryption, summarised in FORMAT.md.
"""

from __future__ import annotations

import hmac
import os
from collections import deque
from collections.abc import Callable
from itertools import repeat
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from . import _kernel
from ._buffers import zero
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

#: chunks per piece of a shared run (a run of two pieces or more uses the helper thread);
#: 1 MiB measured best on 2 cores (benchmarks/bench_core.py --pieces): smaller pieces pay
#: more GIL hand-overs between the threads, larger ones leave a core idle at the end
PARALLEL_MIN_CHUNKS = PIECE_CHUNKS = 64
#: pure path: chunks per ``map`` call, small enough that the views stay in cache
SUB_BATCH_CHUNKS = 64

#: threads per long run (1: the calling thread only; at most 2 are used)
_threads = int(os.environ.get("ENVCRYPT_THREADS", "0")) or min(os.cpu_count() or 1, 2)


def set_threads(count: int) -> None:
    """Set how many threads seal/open one long run of chunks (1 = the calling thread only).

    A second thread runs only the native kernel; without it every run stays on the caller's.
    """
    global _threads
    if count < 1:
        raise ValueError("thread count must be >= 1")
    _threads = count


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

    __slots__ = ("_aead", "_base", "_key", "_base_nonce")

    def __init__(self, aead_key: bytes, base_nonce: bytes) -> None:
        self._aead = AESGCM(aead_key)
        self._key = bytes(aead_key)  # for the native kernel, which takes the key per run
        self._base_nonce = bytes(base_nonce)
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
        if self._run(True, first_chunk, count, src, dst[:out_size]) >= 0:
            raise IntegrityError("internal error: OpenSSL failed to seal a chunk")
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
            if self._run(False, first_chunk, count, src, dst[:out_size]) >= 0:
                raise InvalidTag()
        except InvalidTag:
            zero(dst[:out_size])
            raise IntegrityError() from None
        except BaseException:  # interrupted: what was opened is not handed out either
            zero(dst[:out_size])
            raise
        return out_size

    def seal_single(self, src: bytes | memoryview) -> bytes:
        """The sealed chunk of a message of one chunk (its final chunk 0: ``src`` is shorter than
        a chunk), as new bytes: a small object's body in one AEAD call, no output buffer."""
        if len(src) >= CHUNK_SIZE:
            raise ValueError("a message of one chunk holds less than CHUNK_SIZE bytes")
        return self._aead.encrypt(self._base_nonce, src, None)  # chunk 0: the base nonce itself

    def open_single(self, src: bytes | memoryview) -> bytes:
        """The plaintext of a message of one chunk (``src``: its sealed final chunk 0, in memory
        no other process can change), as new bytes; IntegrityError when it does not authenticate."""
        if not TAG_SIZE <= len(src) < SEALED_CHUNK_SIZE:
            raise IntegrityError()
        try:
            return self._aead.decrypt(self._base_nonce, src, None)
        except InvalidTag:
            raise IntegrityError() from None

    @staticmethod
    def _check_counter(first_chunk: int, count: int) -> None:
        if first_chunk < 0 or first_chunk + count > MAX_CHUNKS:
            raise IntegrityError()

    def _run(self, seal: bool, first: int, count: int, src: memoryview, dst: memoryview) -> int:
        """Seal or open chunks ``first .. first + count - 1``; -1, or (kernel) the first that failed.

        The pure path raises InvalidTag itself; the kernel reports a failed chunk's index.
        """
        if count == 0:
            return -1
        mode = _kernel.mode()
        if count == 1 and mode != "compiled":  # one chunk (a small object): one call, what "pure" does
            (self._aead.encrypt_into if seal else self._aead.decrypt_into)(
                (self._base ^ first).to_bytes(NONCE_SIZE, "big"), src, None, dst)
            return -1
        native = _kernel.module()
        steps = (CHUNK_SIZE, SEALED_CHUNK_SIZE) if seal else (SEALED_CHUNK_SIZE, CHUNK_SIZE)
        op = self._aead.encrypt_into if seal else self._aead.decrypt_into

        def pure(lo: int, hi: int) -> int:
            self._pure(op, first, lo, hi, src, steps[0], dst, steps[1])
            return -1

        if native is None:
            return pure(0, count)
        fn = native.chunk_seal if seal else native.chunk_open
        args = (self._key, self._base_nonce, first, src, dst, count)

        def kernel(lo: int, hi: int) -> int:
            return int(fn(*args, lo, hi))

        share = _threads > 1 and _kernel.two_cores()
        run: Callable[[Callable[[int, int], int]], int]
        if share and _kernel.shared_runs():
            # the helper claims its pieces inside one native call (no GIL between pieces)
            shared = native.chunk_seal_shared if seal else native.chunk_open_shared

            def helper(counter: bytearray, piece: int) -> int:
                return int(shared(*args, counter, piece))

            def run(caller: Callable[[int, int], int]) -> int:
                return _kernel.run_claimed(count, PIECE_CHUNKS, caller, helper)
        else:  # a build without the claim counter, or one usable core

            def run(caller: Callable[[int, int], int]) -> int:
                return _kernel.run_shared(count, PIECE_CHUNKS, caller, kernel if share else None)

        if mode == "hybrid" and _kernel.pure_turn.acquire(blocking=False):
            try:
                return run(pure)
            finally:
                _kernel.pure_turn.release()
        return run(kernel)

    def _pure(
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
        """Chunks ``lo .. hi - 1`` of the run, in sub-batches: one C-level ``map`` over prebuilt views each."""
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

    # chunks wholly inside [start, end) form one range [whole_lo, whole_hi): computed, not searched
    whole_lo = max(first_chunk, -(-start // CHUNK_SIZE))
    whole_hi = min(last, final_index) + 1 if end >= plaintext_size else min(last + 1, end // CHUNK_SIZE)
    if whole_lo >= whole_hi:
        whole_lo = whole_hi = last + 1
    kept: tuple[int, int] | None = None
    for i in [*range(first_chunk, whole_lo), -1, *range(whole_hi, last + 1)]:  # -1: the whole run, in order
        if i < 0:
            if whole_hi > whole_lo:
                run(whole_lo, whole_hi - 1, out[whole_lo * CHUNK_SIZE - start : chunk_end(whole_hi - 1) - start])
            continue
        n = run(i, i, scratch)
        lo, hi = max(start, i * CHUNK_SIZE), min(end, chunk_end(i))
        if hi > lo:
            out[lo - start : hi - start] = scratch[lo - i * CHUNK_SIZE : hi - i * CHUNK_SIZE]
        kept = (i, n)
    return kept

