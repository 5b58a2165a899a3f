"""Interoperability with the reference implementation, ``cryptography.cobblestone``.

An envcrypt object's body is a Cobblestone-256 message whose C2SP context is
the header's immutable part: the reference decrypts it given the DEK (recovered
through the local vault resolver), and a message the reference encrypted,
placed after an envcrypt header, opens with ``decrypt`` and ``open_reader``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.exceptions import InvalidTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envcrypt
from envcrypt.chunked import DEK_SIZE, new_message, open_message
from envcrypt.envelope import new_header, wrap_dek
from envcrypt.errors import WrongKeyError
from envcrypt.format import BODY_PREFIX_SIZE, CHUNK_SIZE, body_size, parse_header
from envcrypt.keys.vault import LocalVault
from envcrypt.slots import open_slots
from tests.stream_helpers import pipe

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 100, 70 * CHUNK_SIZE + 3]
CONTEXTS: list[dict[str, str]] = [{}, {"tenant": "acme", "table": "orders", "é": "ü\x00"}]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def pattern(size: int) -> bytes:
    return bytes((i * 131 + (i >> 14)) & 0xFF for i in range(size)) if size < 4096 else (
        bytes(range(256)) * (size // 256 + 1)
    )[:size]


def reference_decrypt(dek: bytes, context: bytes, body: bytes) -> bytes:
    dec = Cobblestone256Decryptor(dek, context)
    return dec.update(body) + dec.finalize()


def reference_encrypt(dek: bytes, context: bytes, plaintext: bytes) -> bytes:
    enc = Cobblestone256Encryptor(dek, context)
    return enc.update(plaintext) + enc.finalize()


def split_object(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """(DEK recovered through the resolver, C2SP context, body) of an envcrypt object."""
    header, header_size = parse_header(blob)
    dek = open_slots(header, blob[header_size : header_size + 56], ["local:default"], {}).dek
    return dek, header.immutable, blob[header_size:]


def object_from_reference(plaintext: bytes, context: dict[str, str]) -> bytes:
    """A header from envcrypt (fresh DEK, wrapped by the vault) + a body from the reference."""
    dek, header = new_header("local:default", context, {})
    return header.pack() + reference_encrypt(dek, header.immutable, plaintext)


# ---------------------------------------------------------------- envcrypt -> reference


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("context", CONTEXTS, ids=["no-context", "context"])
def test_encrypt_body_opens_with_reference(size: int, context: dict[str, str]) -> None:
    plaintext = pattern(size)
    blob = envcrypt.encrypt(plaintext, encryption_context=context)
    dek, immutable, body = split_object(blob)
    assert len(dek) == DEK_SIZE and len(body) == body_size(size)
    assert reference_decrypt(dek, immutable, body) == plaintext
    # the context is bound: the reference refuses any other context
    with pytest.raises(InvalidTag):
        reference_decrypt(dek, immutable + b"x", body)


@pytest.mark.parametrize("size", SIZES)
def test_writer_body_opens_with_reference(size: int) -> None:
    plaintext = pattern(size)
    out = io.BytesIO()
    with envcrypt.open_writer(out, encryption_context={"k": "v"}, batch_chunks=3) as writer:
        for pos in range(0, size, 10_000):
            writer.write(plaintext[pos : pos + 10_000])
    dek, immutable, body = split_object(out.getvalue())
    assert reference_decrypt(dek, immutable, body) == plaintext


def test_rewrapped_header_keeps_body_for_reference(_isolated_vault: Path) -> None:
    """Rotation rewrites only the key slots: the body and its context stay byte-identical."""
    plaintext = pattern(40_000)
    blob = envcrypt.encrypt(plaintext, encryption_context={"a": "b"})
    dek, immutable, body = split_object(blob)
    header, _ = parse_header(blob)
    LocalVault(_isolated_vault).rotate_key("default")
    rotated = header.with_slots(wrap_dek(dek, ["local:default"], header.encryption_context, {}))
    assert rotated.key_slots[0].key_uri == "local:default/2" and rotated.immutable == immutable
    new_blob = rotated.pack() + body
    assert envcrypt.decrypt(new_blob) == plaintext
    assert reference_decrypt(*split_object(new_blob)) == plaintext


# ---------------------------------------------------------------- reference -> envcrypt


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("context", CONTEXTS, ids=["no-context", "context"])
def test_reference_body_opens_with_decrypt_and_readers(size: int, context: dict[str, str]) -> None:
    plaintext = pattern(size)
    blob = object_from_reference(plaintext, context)
    assert envcrypt.decrypt(blob, encryption_context=context) == plaintext
    info = envcrypt.inspect(blob)
    assert info.plaintext_size == size and dict(info.encryption_context) == context

    reader = envcrypt.open_reader(io.BytesIO(blob))
    assert reader.size == size
    assert reader.read() == plaintext
    mid = size // 2
    reader.seek(mid)
    assert reader.read(CHUNK_SIZE + 5) == plaintext[mid : mid + CHUNK_SIZE + 5]
    tail = min(size, 100)
    assert reader.seek(-tail, io.SEEK_END) == size - tail
    assert reader.read() == plaintext[size - tail :]

    forward = envcrypt.open_reader(pipe(blob))
    assert not forward.seekable()
    assert forward.read() == plaintext


def test_reference_body_under_wrong_context_is_wrong_key() -> None:
    """A reference message made for another context fails the commitment, as a wrong key."""
    dek, header = new_header("local:default", {"a": "1"}, {})
    body = reference_encrypt(dek, header.immutable + b"\x00", b"secret data")
    with pytest.raises(WrongKeyError):
        envcrypt.decrypt(header.pack() + body)
    with pytest.raises(WrongKeyError):
        envcrypt.open_reader(io.BytesIO(header.pack() + body))


# ---------------------------------------------------------------- chunk level, any size


@FAST
@given(plaintext=st.binary(max_size=3 * CHUNK_SIZE + 50), context=st.binary(max_size=64))
def test_chunk_core_and_reference_agree_both_ways(plaintext: bytes, context: bytes) -> None:
    dek = bytes(range(DEK_SIZE))
    # envcrypt seals, the reference opens
    prefix, cipher = new_message(dek, context)
    sealed = bytearray(body_size(len(plaintext)) - BODY_PREFIX_SIZE)
    n = cipher.seal(0, memoryview(plaintext), memoryview(sealed), final=True)
    assert n == len(sealed)
    assert reference_decrypt(dek, context, prefix + bytes(sealed)) == plaintext
    # the reference seals, envcrypt opens
    message = reference_encrypt(dek, context, plaintext)
    assert len(message) == body_size(len(plaintext))
    opener = open_message(dek, context, message[:BODY_PREFIX_SIZE])
    out = bytearray(len(plaintext))
    assert opener.open(0, memoryview(message)[BODY_PREFIX_SIZE:], memoryview(out), final=True) == len(plaintext)
    assert out == plaintext
    with pytest.raises(WrongKeyError):
        open_message(dek, context + b"!", message[:BODY_PREFIX_SIZE])


@FAST
@given(
    size=st.integers(min_value=0, max_value=4 * CHUNK_SIZE),
    context=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4),
)
def test_objects_interoperate_for_any_size_and_context(size: int, context: dict[str, str]) -> None:
    plaintext = pattern(size)
    blob = envcrypt.encrypt(plaintext, encryption_context=context)
    assert reference_decrypt(*split_object(blob)) == plaintext
    assert envcrypt.decrypt(object_from_reference(plaintext, context)) == plaintext
