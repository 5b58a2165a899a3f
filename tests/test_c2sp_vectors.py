"""Wycheproof C2SP chunked-encryption vectors through envcrypt's chunk core.

Both files (Cobblestone-256 and Cobblestone-128) run through the same batching
code (``ChunkCipher.open``) four ways: the whole body in one call, chunk by
chunk with one chunk of look-ahead (streaming), the final chunk alone (random
access: authenticating the length), and through ``DecryptingReader`` (seekable
and forward-only) pointed straight at the bare body.  The 256 file also goes
through envcrypt's own key derivation and commitment check (``derive``,
``open_message``, ``new_message``); the 128 file uses raw mode (``aeadKey``,
``baseNonce``) because envcrypt only derives Cobblestone-256 keys, and
``cryptography.cobblestone`` is the reference for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.cobblestone import Cobblestone128Decryptor, Cobblestone256Decryptor
from cryptography.exceptions import InvalidTag

from envcrypt import _kernel, chunked
from envcrypt.chunked import ChunkCipher, derive, new_message, open_message, set_threads
from envcrypt.errors import EnvcryptError, IntegrityError, WrongKeyError
from envcrypt.format import (
    BODY_PREFIX_SIZE,
    CHUNK_SIZE,
    MAX_CHUNKS,
    SALT_SIZE,
    SEALED_CHUNK_SIZE,
    TAG_SIZE,
    Header,
    KeySlot,
)
from envcrypt.streams import DecryptingReader
from tests.stream_helpers import pipe

WYCHEPROOF = Path(__file__).resolve().parent / "vectors" / "wycheproof"
FILES = {
    256: "c2sp_chunked_encryption_aes_256_gcm_test.json",
    128: "c2sp_chunked_encryption_aes_128_gcm_test.json",
}
REFERENCE: dict[int, Any] = {256: Cobblestone256Decryptor, 128: Cobblestone128Decryptor}


@dataclass(frozen=True)
class Vector:
    bits: int
    tc_id: int
    comment: str
    key: bytes
    ctx: bytes
    ct: bytes
    valid: bool
    flags: frozenset[str]
    aead_key: bytes | None
    base_nonce: bytes | None
    msg_length: int | None
    msg_sha512: str | None

    @property
    def body(self) -> bytes:
        """The chunks: the ciphertext after the 56-byte salt and commitment."""
        return self.ct[BODY_PREFIX_SIZE:]

    @property
    def valid_final_chunk(self) -> bool:
        return self.valid or "ValidFinalChunk" in self.flags

    @property
    def header_failure(self) -> bool:
        return "HeaderFailure" in self.flags

    def matches_prefix(self, data: bytes) -> bool:
        """``data`` is the whole valid message (or valid prefix) the vector describes."""
        return len(data) == self.msg_length and hashlib.sha512(data).hexdigest() == self.msg_sha512

    def raw_cipher(self) -> ChunkCipher:
        assert self.aead_key is not None and self.base_nonce is not None
        return ChunkCipher(self.aead_key, self.base_nonce)


def _optional_hex(test: dict[str, Any]) -> Callable[[str], bytes | None]:
    return lambda name: bytes.fromhex(test[name]) if name in test else None


@cache
def load(bits: int) -> tuple[Vector, ...]:
    data = json.loads((WYCHEPROOF / FILES[bits]).read_text())
    assert data["algorithm"] == f"Cobblestone-{bits}"
    out = []
    for group in data["testGroups"]:
        assert group["aead"] == f"AEAD_AES_{bits}_GCM" and group["sha"] == "SHA-512"
        for t in group["tests"]:
            opt = _optional_hex(t)
            out.append(
                Vector(
                    bits, t["tcId"], t["comment"], bytes.fromhex(t["key"]), bytes.fromhex(t["ctx"]),
                    zlib.decompress(bytes.fromhex(t["ct"])), t["result"] == "valid",
                    frozenset(t["flags"]), opt("aeadKey"), opt("baseNonce"),
                    t.get("msgLength"), t.get("msgSha512"),
                )
            )
    assert len(out) == data["numberOfTests"]
    return tuple(out)


def params(bits: int, keep: Callable[[Vector], bool]) -> list[Any]:
    return [pytest.param(v, id=f"{bits}-{v.tc_id}") for v in load(bits) if keep(v)]


def raw_mode(v: Vector) -> bool:
    return not v.header_failure


ALL_RAW = params(256, raw_mode) + params(128, raw_mode)
HEADER_FAILURES_256 = params(256, lambda v: v.header_failure)


@pytest.fixture
def open_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool]]:
    """Records every ``ChunkCipher.open`` call as (first_chunk, sealed bytes, final)."""
    calls: list[tuple[int, int, bool]] = []
    real = ChunkCipher.open

    def counting(self: ChunkCipher, first: int, src: memoryview, dst: memoryview, final: bool) -> int:
        calls.append((first, len(src), final))
        return real(self, first, src, dst, final)

    monkeypatch.setattr(ChunkCipher, "open", counting)
    return calls


@pytest.fixture(autouse=True, params=["pure", "compiled", "hybrid"] if _kernel.available() else ["pure"])
def kernel_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every vector through every path: pure (cryptography), the native kernel, and both shared."""
    _kernel.use(request.param)
    yield request.param
    _kernel.use(None)


@pytest.fixture(params=[1, 3], ids=["1thread", "3threads"])
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    saved = chunked._threads
    set_threads(request.param)
    yield request.param
    set_threads(saved)


# ---------------------------------------------------------------- drivers


def open_all(cipher: ChunkCipher, body: bytes) -> tuple[bytes | None, bytearray]:
    """The whole body in one ``open`` call; returns (plaintext or None, the output buffer)."""
    out = bytearray(b"\xa5" * len(body))
    try:
        n = cipher.open(0, memoryview(body), memoryview(out), final=True)
    except IntegrityError:
        return None, out
    return bytes(out[:n]), out


def open_streaming(cipher: ChunkCipher, body: bytes) -> tuple[bytes, bool]:
    """Chunk by chunk; a chunk is final when at most one sealed chunk is left.

    Returns (plaintext released before any failure, whether it failed).
    """
    released = bytearray()
    edge = bytearray(CHUNK_SIZE)
    pos = index = 0
    while True:
        rest = len(body) - pos
        final = rest <= SEALED_CHUNK_SIZE
        take = rest if final else SEALED_CHUNK_SIZE
        try:
            n = cipher.open(index, memoryview(body)[pos : pos + take], memoryview(edge), final)
        except IntegrityError:
            return bytes(released), True
        released += edge[:n]
        if final:
            return bytes(released), False
        pos, index = pos + take, index + 1


def open_final_only(cipher: ChunkCipher, body: bytes) -> bytes | None:
    """Random access: locate the final chunk from the length alone and open just it."""
    final_index = len(body) // SEALED_CHUNK_SIZE
    out = bytearray(CHUNK_SIZE)
    try:
        n = cipher.open(final_index, memoryview(body)[final_index * SEALED_CHUNK_SIZE :], memoryview(out), True)
    except IntegrityError:
        return None
    return bytes(out[:n])


def reference(v: Vector) -> tuple[bytes, bool]:
    """``cryptography.cobblestone``: (plaintext released by update, whether it failed)."""
    try:
        dec = REFERENCE[v.bits](v.key, v.ctx)
    except ValueError:
        return b"", True
    released = b""
    try:
        for pos in range(0, len(v.ct), 7000):
            released += dec.update(v.ct[pos : pos + 7000])
        released += dec.finalize()
    except InvalidTag:
        return released, True
    return released, False


ANY_HEADER = Header({}, (KeySlot("local:unused/1", 1, bytes(40)),))


def bare_reader(v: Vector, cipher: ChunkCipher, seekable: bool) -> DecryptingReader:
    """A DecryptingReader straight over the bare C2SP message (no envcrypt header).

    Like ``open_reader``, it is handed the source positioned after salt and commitment.
    """
    source: Any = io.BytesIO(v.ct) if seekable else pipe(v.ct, step=5000)
    source.read(BODY_PREFIX_SIZE)
    return DecryptingReader(source, ANY_HEADER, 0, cipher)


def read_until_failure(reader: DecryptingReader, step: int) -> tuple[bytes, bool]:
    released = bytearray()
    while True:
        try:
            part = reader.read(step)
        except IntegrityError:
            return bytes(released), True
        if not part:
            return bytes(released), False
        released += part


def check_released(v: Vector, released: bytes, failed: bool) -> None:
    """Valid: everything. Invalid: fail, releasing at most the vector's valid prefix."""
    if v.valid:
        assert not failed
        assert v.matches_prefix(released)
        return
    assert failed
    if "PartialPlaintext" not in v.flags:
        assert released == b""
        return
    assert v.msg_length is not None
    assert len(released) <= v.msg_length
    ref_released, ref_failed = reference(v)
    assert ref_failed and released == ref_released[: len(released)]


# ---------------------------------------------------------------- tests


def test_vector_files_cover_every_case() -> None:
    for bits in FILES:
        vectors = load(bits)
        flags = set().union(*(v.flags for v in vectors))
        assert {"PartialPlaintext", "ValidFinalChunk", "HeaderFailure", "CounterRollover"} <= flags
        assert sum(v.valid for v in vectors) == 10
        assert all(v.aead_key is not None for v in vectors if not v.header_failure)


@pytest.mark.parametrize("v", ALL_RAW)
def test_reference_agrees_with_vector(v: Vector) -> None:
    released, failed = reference(v)
    assert failed != v.valid
    if v.valid:
        assert v.matches_prefix(released)


@pytest.mark.parametrize("v", ALL_RAW)
def test_whole_body_in_one_call(v: Vector, threads: int) -> None:
    plaintext, out = open_all(v.raw_cipher(), v.body)
    if v.valid:
        assert plaintext is not None and v.matches_prefix(plaintext)
    else:
        assert plaintext is None
        # a failed open leaves no plaintext behind: the output span is zeroed
        span = max(len(v.body) - (len(v.body) // SEALED_CHUNK_SIZE + 1) * TAG_SIZE, 0)
        if len(v.body) % SEALED_CHUNK_SIZE >= TAG_SIZE:
            assert out[:span] == bytes(span)


@pytest.mark.parametrize("v", ALL_RAW)
def test_chunk_by_chunk_streaming(v: Vector) -> None:
    released, failed = open_streaming(v.raw_cipher(), v.body)
    assert len(released) % CHUNK_SIZE == 0 or not failed  # whole authenticated chunks only
    check_released(v, released, failed)


@pytest.mark.parametrize("v", ALL_RAW)
def test_final_chunk_alone_authenticates_exactly_valid_final_chunks(v: Vector) -> None:
    tail = open_final_only(v.raw_cipher(), v.body)
    assert (tail is not None) == v.valid_final_chunk
    if v.valid:
        assert v.msg_length is not None and tail is not None
        assert len(tail) == v.msg_length % CHUNK_SIZE


@pytest.mark.parametrize("v", ALL_RAW)
def test_seekable_reader_over_bare_message(v: Vector) -> None:
    reader = bare_reader(v, v.raw_cipher(), seekable=True)
    released, failed = read_until_failure(reader, 3 * CHUNK_SIZE + 5)
    if v.valid:
        assert not failed and v.matches_prefix(released)
        assert reader.size == v.msg_length
    else:
        assert failed
        with pytest.raises(IntegrityError):  # and it keeps failing
            reader.read(1)
    # seeking from the end authenticates the length by opening only the final chunk
    fresh = bare_reader(v, v.raw_cipher(), seekable=True)
    try:
        end = fresh.seek(0, io.SEEK_END)
    except IntegrityError:
        assert not v.valid_final_chunk
    else:
        assert v.valid_final_chunk
        assert end == len(v.body) - (len(v.body) // SEALED_CHUNK_SIZE + 1) * TAG_SIZE


@pytest.mark.parametrize("v", ALL_RAW)
def test_forward_only_reader_over_bare_message(v: Vector) -> None:
    reader = bare_reader(v, v.raw_cipher(), seekable=False)
    assert not reader.seekable()
    released, failed = read_until_failure(reader, 10_000)
    check_released(v, released, failed)
    if failed:
        for _ in range(2):
            with pytest.raises(IntegrityError):
                reader.read(1)


# ------------------------------------------------ Cobblestone-256 key derivation


@pytest.mark.parametrize("v", params(256, raw_mode))
def test_derive_matches_vector_aead_key_and_nonce(v: Vector) -> None:
    if len(v.ct) < BODY_PREFIX_SIZE:
        pytest.skip("no salt in this ciphertext")
    key, base_nonce, commitment = derive(v.key, v.ct[:SALT_SIZE], v.ctx)
    assert (key, base_nonce) == (v.aead_key, v.base_nonce)
    assert commitment == v.ct[SALT_SIZE:BODY_PREFIX_SIZE]


@pytest.mark.parametrize("v", params(256, raw_mode))
def test_open_message_then_drivers(v: Vector, open_calls: list[tuple[int, int, bool]]) -> None:
    cipher = open_message(v.key, v.ctx, v.ct[:BODY_PREFIX_SIZE])
    plaintext, _ = open_all(cipher, v.body)
    assert (plaintext is not None) == v.valid
    check_released(v, *open_streaming(cipher, v.body))
    assert (open_final_only(cipher, v.body) is not None) == v.valid_final_chunk
    assert open_calls  # the chunk driver really ran


@pytest.mark.parametrize("v", params(256, lambda v: v.valid))
def test_new_message_with_vector_salt_reproduces_ciphertext(v: Vector) -> None:
    plaintext, _ = open_all(v.raw_cipher(), v.body)
    assert plaintext is not None
    prefix, cipher = new_message(v.key, v.ctx, _salt=v.ct[:SALT_SIZE])
    out = bytearray(len(v.body))
    n = cipher.seal(0, memoryview(plaintext), memoryview(out), final=True)
    assert prefix + bytes(out[:n]) == v.ct


@pytest.mark.parametrize("v", HEADER_FAILURES_256)
def test_header_failures_fail_before_any_chunk(v: Vector, open_calls: list[tuple[int, int, bool]]) -> None:
    flags = v.flags
    if "InvalidKeySize" in flags:
        # a DEK of another size can only come from a forged or foreign key slot
        expected: type[Exception] = WrongKeyError
    elif "Truncation" in flags:
        expected = IntegrityError  # shorter than salt + commitment
    else:  # wrong key, wrong context, modified salt or commitment
        expected = WrongKeyError
    with pytest.raises(expected) as info:
        open_message(v.key, v.ctx, v.ct[:BODY_PREFIX_SIZE])
    assert isinstance(info.value, EnvcryptError)
    assert v.key.hex() not in str(info.value)
    assert open_calls == []
    assert reference(v) == (b"", True)


@pytest.mark.parametrize("v", params(128, lambda v: v.header_failure))
def test_128_header_failures_rejected_by_reference(v: Vector) -> None:
    assert reference(v) == (b"", True)


def test_derive_is_cobblestone_256_only() -> None:
    v = load(128)[0]
    with pytest.raises(ValueError):
        derive(v.key, v.ct[:SALT_SIZE], v.ctx)
    with pytest.raises(ValueError):
        derive(bytes(32), bytes(23), b"")


# ------------------------------------------------ the threaded batch path


def _rollover(bits: int) -> Vector:
    return next(v for v in load(bits) if v.tc_id == 8)  # 257 full chunks + a short one


@pytest.mark.parametrize("bits", [256, 128])
@pytest.mark.parametrize("bad_chunk", [0, 100, 200, 257])
def test_tampered_chunk_in_any_thread_segment_zeroes_all_output(bits: int, bad_chunk: int, threads: int) -> None:
    v = _rollover(bits)
    body = bytearray(v.body)
    body[bad_chunk * SEALED_CHUNK_SIZE + 3] ^= 0x40
    plaintext, out = open_all(v.raw_cipher(), bytes(body))
    assert plaintext is None
    size = v.msg_length
    assert size is not None and out[:size] == bytes(size)


@pytest.mark.parametrize("bits", [256, 128])
def test_runs_of_whole_chunks_open_at_any_index(bits: int, threads: int) -> None:
    """Non-final runs (``final=False``) starting mid-message give the same bytes as one call."""
    v = _rollover(bits)
    whole, _ = open_all(v.raw_cipher(), v.body)
    assert whole is not None
    cipher = v.raw_cipher()
    for first, count in [(0, 1), (1, 255), (255, 2), (40, 100), (256, 1)]:
        src = memoryview(v.body)[first * SEALED_CHUNK_SIZE : (first + count) * SEALED_CHUNK_SIZE]
        out = bytearray(count * CHUNK_SIZE)
        assert cipher.open(first, src, memoryview(out), final=False) == count * CHUNK_SIZE
        assert out == whole[first * CHUNK_SIZE : (first + count) * CHUNK_SIZE]
        # the same run at the wrong index fails
        with pytest.raises(IntegrityError):
            cipher.open(first + 1, src, memoryview(out), final=False)
        # a whole chunk is never a valid final chunk
        with pytest.raises(IntegrityError):
            cipher.open(first, src, memoryview(out), final=True)


def test_nonce_is_base_nonce_xor_big_endian_counter() -> None:
    v = load(256)[0]
    assert v.base_nonce is not None
    cipher = v.raw_cipher()
    base = int.from_bytes(v.base_nonce, "big")
    for index in (0, 1, 0xFF, 0x100, 0x1_0000_0000, MAX_CHUNKS - 1):
        assert cipher.nonce(index) == (base ^ index).to_bytes(12, "big")
    assert cipher.nonce(0) == v.base_nonce
    for bad in (-1, MAX_CHUNKS):
        with pytest.raises(IntegrityError):
            cipher.nonce(bad)


def test_chunk_counter_stops_at_two_to_the_38() -> None:
    """The last chunk index is 2**38 - 1; a run reaching 2**38 is refused on both sides."""
    cipher = load(256)[0].raw_cipher()
    sealed = bytearray(TAG_SIZE)
    assert cipher.seal(MAX_CHUNKS - 1, memoryview(b""), memoryview(sealed), final=True) == TAG_SIZE
    out = bytearray(0)
    assert cipher.open(MAX_CHUNKS - 1, memoryview(sealed), memoryview(out), final=True) == 0
    with pytest.raises(IntegrityError):
        cipher.open(MAX_CHUNKS, memoryview(sealed), memoryview(out), final=True)
    with pytest.raises(EnvcryptError):
        cipher.seal(MAX_CHUNKS, memoryview(b""), memoryview(sealed), final=True)
    two = bytearray(SEALED_CHUNK_SIZE + TAG_SIZE)
    with pytest.raises(EnvcryptError):  # a full chunk at 2**38 - 1 would need a final one at 2**38
        cipher.seal(MAX_CHUNKS - 1, memoryview(bytes(CHUNK_SIZE)), memoryview(two), final=True)
