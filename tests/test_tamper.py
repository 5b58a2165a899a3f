"""Tampering: every bit flip, truncation, reordering, splicing, extension, edits, forged slots.

Each modification must raise a typed ``EnvcryptError`` (the right one for the
place that was modified) through ``decrypt`` and through both readers, and must
never yield plaintext other than the original.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from collections.abc import Callable
from typing import Any

import pytest

import envcrypt
from envcrypt.chunked import new_message
from envcrypt.envelope import new_header
from envcrypt.errors import (
    EnvcryptError,
    IntegrityError,
    KeyNotFoundError,
    MalformedHeaderError,
    NotEncryptedError,
    UnknownKeySchemeError,
    UnsupportedVersionError,
    UntrustedKeyError,
    WrongKeyError,
)
from envcrypt.format import (
    BODY_PREFIX_SIZE,
    CHUNK_SIZE,
    FIXED_PREFIX_SIZE,
    SEALED_CHUNK_SIZE,
    Header,
    KeySlot,
    body_size,
    parse_header,
)
from envcrypt.keys.vault import LocalVault
from tests.stream_helpers import pipe

C = CHUNK_SIZE
S = SEALED_CHUNK_SIZE
SMALL = bytes(range(1, 101))  # one short chunk


def read_to_end(reader: Any) -> bytes:
    """Read the way a consumer streams: pieces until an empty read."""
    parts = []
    while part := reader.read(3 * C + 11):
        parts.append(part)
    return b"".join(parts)


PATHS: dict[str, Callable[[bytes], bytes]] = {
    "decrypt": lambda blob: envcrypt.decrypt(blob),
    "reader": lambda blob: read_to_end(envcrypt.open_reader(io.BytesIO(blob))),
    "forward-only": lambda blob: read_to_end(envcrypt.open_reader(pipe(blob))),
}


def outcome(path: str, blob: bytes, original: bytes) -> str:
    """The error class name, or "same" when the original plaintext came back."""
    try:
        result = PATHS[path](blob)
    except EnvcryptError as exc:
        return type(exc).__name__
    except Exception as exc:
        return f"untyped {type(exc).__name__}: {exc}"
    return "same" if result == original else "DIFFERENT PLAINTEXT"


def assert_fails(blob: bytes, original: bytes, error: type[EnvcryptError]) -> None:
    for path in PATHS:
        assert outcome(path, blob, original) == error.__name__, path


# ---------------------------------------------------------------- every bit


def small_object() -> bytes:
    blob = envcrypt.encrypt(SMALL, encryption_context={"a": "b"})
    header, size = parse_header(blob)
    assert header.key_slots[0].key_uri == "local:default/1" and len(header.key_slots[0].wrapped_dek) == 40
    assert size == 91 and len(blob) == size + body_size(len(SMALL))
    return blob


# (region, start, end, error classes a flip there may raise): the layout of small_object()
URI = 32  # "local:default/1" at 32..46
REGIONS: list[tuple[str, int, int, set[type[EnvcryptError]]]] = [
    ("magic", 0, 8, {NotEncryptedError}),
    ("format_version", 8, 9, {UnsupportedVersionError}),
    ("suite_id", 9, 10, {UnsupportedVersionError}),
    ("flags", 10, 12, {MalformedHeaderError}),
    ("context_length", 12, 16, {MalformedHeaderError}),
    ("context pair count", 16, 18, {MalformedHeaderError}),
    ("context key length", 18, 20, {MalformedHeaderError}),
    # an edited context is authenticated by the commitment; invalid UTF-8 is malformed
    ("context key", 20, 21, {WrongKeyError, MalformedHeaderError}),
    ("context value length", 21, 23, {MalformedHeaderError}),
    ("context value", 23, 24, {WrongKeyError, MalformedHeaderError}),
    ("slots_length", 24, 28, {MalformedHeaderError}),
    ("slot count", 28, 30, {MalformedHeaderError}),
    ("key URI length", 30, 32, {MalformedHeaderError}),
    # a slot naming another key is not trusted (a flipped version digit still names local:default)
    ("key URI scheme", URI, URI + 5, {UntrustedKeyError, MalformedHeaderError}),
    ("key URI separator", URI + 5, URI + 6, {UntrustedKeyError, MalformedHeaderError}),
    ("key URI name and version", URI + 6, URI + 15, {UntrustedKeyError, KeyNotFoundError, MalformedHeaderError}),
    ("wrap algorithm", 47, 49, {WrongKeyError}),
    ("wrapped DEK length", 49, 51, {MalformedHeaderError}),
    ("wrapped DEK", 51, 91, {WrongKeyError}),
    ("salt", 91, 115, {WrongKeyError}),
    ("commitment", 115, 147, {WrongKeyError}),
    ("chunk ciphertext", 147, 247, {IntegrityError}),
    ("chunk tag", 247, 263, {IntegrityError}),
]


def test_regions_cover_the_whole_small_object() -> None:
    blob = small_object()
    assert blob[URI : URI + 15] == b"local:default/1"
    ends = [0] + [end for _, _, end, _ in REGIONS]
    assert [start for _, start, _, _ in REGIONS] == ends[:-1]
    assert ends[-1] == len(blob)


@pytest.mark.parametrize(
    ("start", "end", "errors"),
    [pytest.param(start, end, errors, id=name) for name, start, end, errors in REGIONS],
)
def test_every_bit_flip_raises_the_error_of_its_region(start: int, end: int, errors: set[type[EnvcryptError]]) -> None:
    blob = small_object()
    allowed = {e.__name__ for e in errors}
    seen: dict[str, str] = {}
    for i in range(start, end):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[i] ^= 1 << bit
            for path in PATHS:
                got = outcome(path, bytes(flipped), SMALL)
                # Key slots are not authenticated (rotation rewrites them); the URI scheme is
                # case-insensitive, so upper-casing a scheme letter still opens the same key and
                # the body then authenticates: the original plaintext, nothing else.
                benign = start == URI and bit == 5 and got == "same"
                if not benign:
                    seen[f"byte {i} bit {bit} {path}"] = got
    wrong = {where: got for where, got in seen.items() if got not in allowed}
    assert seen and not wrong  # every flip failed, with an error of its region


# ---------------------------------------------------------------- truncation, reordering


@pytest.fixture
def five_chunks() -> tuple[bytes, bytes, int]:
    """(plaintext of 4 full chunks + 100 bytes, its object, offset of sealed chunk 0)."""
    plaintext = os.urandom(4 * C + 100)
    blob = envcrypt.encrypt(plaintext)
    return plaintext, blob, parse_header(blob)[1] + BODY_PREFIX_SIZE


def chunks_of(blob: bytes, start: int) -> list[bytes]:
    return [blob[pos : pos + S] for pos in range(start, len(blob), S)]


def test_truncation_anywhere_in_the_body_is_an_integrity_error(five_chunks: tuple[bytes, bytes, int]) -> None:
    plaintext, blob, start = five_chunks
    cuts = {start - BODY_PREFIX_SIZE, start - 1}  # inside salt / commitment
    for k in range(5):
        base = start + k * S
        cuts |= {base, base + 1, base + 15, base + 16, base + 17, base + C // 2, base + S - 1}
    cuts |= set(range(len(blob) - 40, len(blob)))
    for cut in sorted(c for c in cuts if c < len(blob)):
        assert_fails(blob[:cut], plaintext, IntegrityError)


def test_cut_inside_the_header_is_malformed(five_chunks: tuple[bytes, bytes, int]) -> None:
    plaintext, blob, start = five_chunks
    for cut in range(1, start - BODY_PREFIX_SIZE, 7):
        assert_fails(blob[:cut], plaintext, MalformedHeaderError)


@pytest.mark.parametrize(
    "reorder",
    [
        lambda c: [c[1], c[0], *c[2:]],  # swap
        lambda c: [c[0], c[2], c[1], *c[3:]],  # swap in the middle
        lambda c: [c[0], c[0], *c[2:]],  # duplicate over the next
        lambda c: [c[0], *c[1:4], c[3], c[4]],  # duplicate inserted
        lambda c: [c[0], *c[2:]],  # drop one
        lambda c: c[:4],  # drop the final chunk
        lambda c: [c[4], *c[1:4], c[0]],  # final chunk moved to the front
        lambda c: c[:3] + [c[4]],  # final chunk moved one earlier
    ],
    ids=["swap-0-1", "swap-1-2", "dup-over", "dup-insert", "drop", "drop-final", "final-first", "final-earlier"],
)
def test_reordered_chunks_fail(five_chunks: tuple[bytes, bytes, int], reorder: Callable[[list[bytes]], list[bytes]]) -> None:
    plaintext, blob, start = five_chunks
    chunks = chunks_of(blob, start)
    assert len(chunks) == 5
    assert_fails(blob[:start] + b"".join(reorder(chunks)), plaintext, IntegrityError)


def test_chunk_spliced_from_another_object_under_the_same_master_key(five_chunks: tuple[bytes, bytes, int]) -> None:
    plaintext, blob, start = five_chunks
    other = envcrypt.encrypt(plaintext)  # same master key, same plaintext, other DEK
    other_start = parse_header(other)[1] + BODY_PREFIX_SIZE
    for k in (0, 2, 4):
        mine = chunks_of(blob, start)
        mine[k] = chunks_of(other, other_start)[k]
        assert_fails(blob[:start] + b"".join(mine), plaintext, IntegrityError)
    # the other object's whole body behind this header: a different salt fails the commitment
    assert_fails(blob[: start - BODY_PREFIX_SIZE] + other[other_start - BODY_PREFIX_SIZE :], plaintext, WrongKeyError)


def test_chunk_spliced_between_messages_under_the_same_dek() -> None:
    """Even under one DEK (a DEK cache), each message's salt gives it its own AEAD key."""
    plaintext = os.urandom(3 * C + 5)
    dek, header = new_header("local:default", {}, {})
    head = header.pack()
    bodies = []
    for _ in range(2):
        prefix, cipher = new_message(dek, header.immutable)
        sealed = bytearray(body_size(len(plaintext)) - BODY_PREFIX_SIZE)
        cipher.seal(0, memoryview(plaintext), memoryview(sealed), final=True)
        bodies.append(prefix + bytes(sealed))
    for body in bodies:
        assert envcrypt.decrypt(head + body) == plaintext
    for k in range(4):
        spliced = bytearray(bodies[0])
        spliced[BODY_PREFIX_SIZE + k * S : BODY_PREFIX_SIZE + (k + 1) * S] = bodies[1][
            BODY_PREFIX_SIZE + k * S : BODY_PREFIX_SIZE + (k + 1) * S
        ]
        assert_fails(head + bytes(spliced), plaintext, IntegrityError)


@pytest.mark.parametrize("extra", [1, 15, 16, 17, S - 1, S, S + 16], ids=lambda n: f"{n}-bytes")
def test_appended_bytes_are_rejected(five_chunks: tuple[bytes, bytes, int], extra: int) -> None:
    plaintext, blob, _ = five_chunks
    assert_fails(blob + os.urandom(extra), plaintext, IntegrityError)
    assert_fails(blob + bytes(extra), plaintext, IntegrityError)


def test_appended_copy_of_the_final_chunk_is_rejected(five_chunks: tuple[bytes, bytes, int]) -> None:
    plaintext, blob, start = five_chunks
    assert_fails(blob + chunks_of(blob, start)[-1], plaintext, IntegrityError)


# ---------------------------------------------------------------- header edits


def rebuilt(
    blob: bytes, *, encryption_context: dict[str, str] | None = None, key_slots: tuple[KeySlot, ...] | None = None
) -> bytes:
    """The object with its header rebuilt around the same body, some fields replaced."""
    header, size = parse_header(blob)
    context = header.encryption_context if encryption_context is None else encryption_context
    return Header(context, header.key_slots if key_slots is None else key_slots).pack() + blob[size:]


@pytest.mark.parametrize(
    "context",
    [{"tenant": "evil"}, {"tenant": "acme", "extra": "1"}, {}, {"Tenant": "acme"}],
    ids=["value", "added-pair", "removed", "key-case"],
)
def test_edited_encryption_context_fails_the_commitment(context: dict[str, str]) -> None:
    blob = envcrypt.encrypt(b"data", encryption_context={"tenant": "acme"})
    assert_fails(rebuilt(blob, encryption_context=context), b"data", WrongKeyError)


def test_rewritten_key_slots_keep_the_object_valid() -> None:
    """The positive control: rotation-style slot rewrites are not tampering."""
    blob = envcrypt.encrypt(b"data", encryption_context={"tenant": "acme"})
    header, _ = parse_header(blob)
    slot = header.key_slots[0]
    assert envcrypt.decrypt(rebuilt(blob, key_slots=(slot, slot))) == b"data"


def test_slot_pointing_at_another_key_is_untrusted_or_wrong_key() -> None:
    vault = LocalVault()
    other = vault.create_key("other")
    blob = envcrypt.encrypt(b"data")
    slot = parse_header(blob)[0].key_slots[0]
    forged = rebuilt(blob, key_slots=(KeySlot(other, slot.wrap_algorithm, slot.wrapped_dek),))
    assert_fails(forged, b"data", UntrustedKeyError)  # a WrongKeyError too
    with pytest.raises(WrongKeyError, match="does not unwrap"):  # trusted, but the wrap is not its
        envcrypt.decrypt(forged, trusted_keys=["local:default", "local:other"])


def test_slot_with_unknown_scheme_is_untrusted_unless_trusted() -> None:
    blob = envcrypt.encrypt(b"data")
    slot = parse_header(blob)[0].key_slots[0]
    forged = rebuilt(blob, key_slots=(KeySlot("nosuch:key", 1, slot.wrapped_dek),))
    assert_fails(forged, b"data", UntrustedKeyError)
    with pytest.raises(UnknownKeySchemeError):
        envcrypt.decrypt(forged, trusted_keys=["nosuch:key"])


@pytest.mark.parametrize("with_options", [False, True], ids=["no-options", "vault-option"])
def test_unknown_scheme_slot_does_not_block_other_slots(with_options: bool) -> None:
    options: dict[str, Any] = {"vault": str(LocalVault().path)} if with_options else {}
    blob = envcrypt.encrypt(b"data", **options)
    slot = parse_header(blob)[0].key_slots[0]
    forged = KeySlot("nosuch:key", 1, slot.wrapped_dek)
    assert envcrypt.decrypt(rebuilt(blob, key_slots=(forged, slot)), **options) == b"data"


def test_unparseable_slot_uri_is_untrusted_and_skipped() -> None:
    blob = envcrypt.encrypt(b"data")
    slot = parse_header(blob)[0].key_slots[0]
    forged = KeySlot("localdefault/1", 1, slot.wrapped_dek)
    assert_fails(rebuilt(blob, key_slots=(forged,)), b"data", UntrustedKeyError)
    assert envcrypt.decrypt(rebuilt(blob, key_slots=(forged, slot))) == b"data"


@pytest.mark.parametrize("dek_size", [16, 31, 33])
def test_slot_unwrapping_to_a_wrong_size_dek_is_wrong_key(dek_size: int) -> None:
    blob = envcrypt.encrypt(b"data")
    slot = parse_header(blob)[0].key_slots[0]
    uri, wrapped = LocalVault().wrap_key(slot.key_uri, os.urandom(dek_size))
    forged = KeySlot(uri, slot.wrap_algorithm, wrapped)
    with pytest.raises(WrongKeyError):
        envcrypt.decrypt(rebuilt(blob, key_slots=(forged,)))
    assert envcrypt.decrypt(rebuilt(blob, key_slots=(forged, slot))) == b"data"


@pytest.mark.parametrize(
    ("offset", "value", "error"),
    [
        (12, 0xFFFFFFFF, MalformedHeaderError),  # context_length
        (12, 0x00010001, MalformedHeaderError),
        (FIXED_PREFIX_SIZE + 2, 0xFFFFFFFF, MalformedHeaderError),  # slots_length, empty context
        (FIXED_PREFIX_SIZE + 2, 0x7FFFFFFF, MalformedHeaderError),
    ],
    ids=["context_length-max", "context_length-64k+1", "slots_length-max", "slots_length-2g"],
)
def test_absurd_declared_lengths_in_a_real_object(offset: int, value: int, error: type[EnvcryptError]) -> None:
    blob = bytearray(envcrypt.encrypt(b"data"))
    blob[offset : offset + 4] = struct.pack(">I", value)
    assert_fails(bytes(blob), b"data", error)
    with pytest.raises(error):
        envcrypt.inspect(bytes(blob))
    with pytest.raises(error):
        envcrypt.inspect(io.BytesIO(bytes(blob)))


# ---------------------------------------------------------------- not encrypted at all


def parquet_bytes() -> bytes:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2, 3]}), sink)
    assert sink.getvalue()[:4] == b"PAR1"
    return sink.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        parquet_bytes,
        lambda: gzip.compress(b"hello " * 100),
        lambda: b"\x00" + os.urandom(4000),
        lambda: b"",
        lambda: b"{}",
        lambda: b"X",
    ],
    ids=["parquet", "gzip", "random", "empty", "json", "one-byte"],
)
def test_not_encrypted_inputs(make: Callable[[], bytes]) -> None:
    data = make()
    assert_fails(data, b"", NotEncryptedError)
    with pytest.raises(NotEncryptedError):
        envcrypt.inspect(data)
    with pytest.raises(NotEncryptedError):
        envcrypt.inspect(io.BytesIO(data))
