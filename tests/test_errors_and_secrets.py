"""The error tree, typed errors for key and context problems, and keeping key material private."""

from __future__ import annotations

import base64
import copy
import io
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import envcrypt
from envcrypt import errors
from envcrypt.chunked import ChunkCipher, derive, open_message, set_threads
from envcrypt.errors import (
    ClosedError,
    ContextMismatchError,
    EnvcryptError,
    IntegrityError,
    KeyError_,
    KeyNotFoundError,
    UnknownKeySchemeError,
    WrongKeyError,
)
from envcrypt.format import BODY_PREFIX_SIZE, CHUNK_SIZE, SALT_SIZE, parse_header
from envcrypt.slots import open_slots

# ---------------------------------------------------------------- the tree


def test_every_error_is_an_envcrypt_error() -> None:
    classes = [getattr(errors, name) for name in errors.__all__ if not name.endswith("Warning")]
    assert all(issubclass(cls, EnvcryptError) for cls in classes)
    assert issubclass(errors.UnpublishedWriteWarning, RuntimeWarning)
    for name in ("KeyNotFoundError", "KeyDisabledError", "KeyDeletedError", "KeyAccessDeniedError",
                 "ResolverUnavailableError", "UnknownKeySchemeError"):
        assert issubclass(getattr(errors, name), KeyError_)
    assert issubclass(ClosedError, ValueError)  # like io's "I/O operation on closed file"
    assert not issubclass(IntegrityError, (WrongKeyError, KeyError_))
    for name in ("IntegrityError", "WrongKeyError", "NotEncryptedError", "ContextMismatchError"):
        assert getattr(envcrypt, name) is getattr(errors, name)


def test_integrity_errors_say_nothing_about_where() -> None:
    plaintext = bytes(3 * CHUNK_SIZE + 5)
    blob = envcrypt.encrypt(plaintext)
    start = parse_header(blob)[1] + BODY_PREFIX_SIZE
    flipped = bytearray(blob)
    flipped[start + CHUNK_SIZE + 100] ^= 1
    variants = [bytes(flipped), blob[:-1], blob + b"\x00", blob[:-20]]
    messages = set()
    for bad in variants:
        with pytest.raises(IntegrityError) as info:
            envcrypt.decrypt(bad)
        messages.add(str(info.value))
        with pytest.raises(IntegrityError) as info:
            reader = envcrypt.open_reader(io.BytesIO(bad))  # an impossible length fails here already
            while reader.read(CHUNK_SIZE):
                pass
        messages.add(str(info.value))
    assert messages == {str(IntegrityError())}


# ---------------------------------------------------------------- typed errors


def test_context_mismatch() -> None:
    blob = envcrypt.encrypt(b"data", encryption_context={"tenant": "acme", "table": "t"})
    for expected in ({"tenant": "other"}, {"missing": "x"}, {"tenant": "acme", "table": "u"}):
        with pytest.raises(ContextMismatchError):
            envcrypt.decrypt(blob, encryption_context=expected)
        with pytest.raises(ContextMismatchError):
            envcrypt.open_reader(io.BytesIO(blob), encryption_context=expected)
    assert envcrypt.decrypt(blob, encryption_context={"table": "t"}) == b"data"


def test_unknown_key_scheme() -> None:
    with pytest.raises(UnknownKeySchemeError):
        envcrypt.encrypt(b"x", "nosuch:key")
    with pytest.raises(UnknownKeySchemeError):
        envcrypt.open_writer(io.BytesIO(), "nosuch://key")
    with pytest.raises(UnknownKeySchemeError):
        envcrypt.encrypt(b"x", ["local:default", "nosuch:key"])


def test_missing_local_key() -> None:
    with pytest.raises(KeyNotFoundError):
        envcrypt.encrypt(b"x", "local:never-created")


def test_unknown_resolver_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        envcrypt.encrypt(b"x", "local:default", region="us-east-1")


def test_wrong_dek_is_wrong_key_before_any_chunk() -> None:
    blob = envcrypt.encrypt(b"data" * 1000)
    header, size = parse_header(blob)
    prefix = blob[size : size + BODY_PREFIX_SIZE]
    dek = open_slots(header, blob[size : size + BODY_PREFIX_SIZE], ["local:default"], {}).dek
    assert isinstance(open_message(dek, header.immutable, prefix), ChunkCipher)
    with pytest.raises(WrongKeyError):
        open_message(bytes(32), header.immutable, prefix)
    with pytest.raises(WrongKeyError):
        open_message(dek, header.immutable + b"\x00", prefix)


def test_commitment_failures_decrypt_no_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = envcrypt.encrypt(b"data" * 10_000, encryption_context={"k": "v"})
    size = parse_header(blob)[1]
    calls: list[int] = []
    monkeypatch.setattr(ChunkCipher, "open", lambda *args: calls.append(1))
    for offset in (size, size + SALT_SIZE + 3):  # salt, commitment
        bad = bytearray(blob)
        bad[offset] ^= 0x10
        with pytest.raises(WrongKeyError):
            envcrypt.decrypt(bytes(bad))
        with pytest.raises(WrongKeyError):
            envcrypt.open_reader(io.BytesIO(bytes(bad)))
    assert calls == []


def test_thread_count_must_be_positive() -> None:
    with pytest.raises(ValueError):
        set_threads(0)


# ---------------------------------------------------------------- secrets


def secret_forms(secret: bytes) -> list[Any]:
    """Ways a key could leak into text."""
    return [secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(), repr(secret)[2:-1]]


def assert_no_secret(text: str, *secrets: bytes) -> None:
    for secret in secrets:
        for form in secret_forms(secret):
            assert form not in text


@pytest.fixture
def opened() -> dict[str, Any]:
    """An object, its DEK and derived AEAD key, and live reader/writer/cipher objects."""
    blob = envcrypt.encrypt(b"secret payload " * 3000, encryption_context={"k": "v"})
    header, size = parse_header(blob)
    dek = open_slots(header, blob[size : size + BODY_PREFIX_SIZE], ["local:default"], {}).dek
    aead_key = derive(dek, blob[size : size + SALT_SIZE], header.immutable)[0]
    writer = envcrypt.open_writer(io.BytesIO())
    writer.write(b"abc")
    return {
        "blob": blob, "dek": dek, "aead_key": aead_key, "writer": writer,
        "reader": envcrypt.open_reader(io.BytesIO(blob)),
        "cipher": open_message(dek, header.immutable, blob[size : size + BODY_PREFIX_SIZE]),
    }


@pytest.mark.parametrize("name", ["writer", "reader", "cipher"])
def test_key_holders_refuse_to_pickle_or_copy(opened: dict[str, Any], name: str) -> None:
    obj = opened[name]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(obj, protocol=protocol)
    with pytest.raises(TypeError):
        copy.copy(obj)
    with pytest.raises(TypeError):
        copy.deepcopy(obj)


@pytest.mark.parametrize("name", ["writer", "reader", "cipher"])
def test_key_holders_show_no_key_material(opened: dict[str, Any], name: str) -> None:
    obj = opened[name]
    assert_no_secret(repr(obj) + str(obj), opened["dek"], opened["aead_key"])
    assert "key" not in repr(obj).lower()


def test_writer_does_not_keep_the_dek() -> None:
    out = io.BytesIO()
    writer = envcrypt.open_writer(out)
    writer.write(b"x" * 100)
    state = dict(vars(writer))
    writer.close()
    header, size = parse_header(out.getvalue())
    dek = open_slots(header, out.getvalue()[size : size + 56], ["local:default"], {}).dek
    assert all(value != dek for value in state.values())
    assert all(not isinstance(value, (bytes, bytearray)) or dek not in value for value in state.values())


def test_the_dek_is_not_in_the_stored_object(opened: dict[str, Any]) -> None:
    blob = opened["blob"]
    assert opened["dek"] not in blob and opened["aead_key"] not in blob


def test_inspect_shows_no_key_material(opened: dict[str, Any]) -> None:
    info = envcrypt.inspect(opened["blob"])
    text = repr(info) + str(info.as_dict())
    assert_no_secret(text, opened["dek"], opened["aead_key"])
    wrapped = info.key_slots[0].wrapped_dek
    assert wrapped.hex() not in text and repr(wrapped) not in text  # not even wrapped


def test_errors_carry_no_key_material(opened: dict[str, Any]) -> None:
    blob, dek = opened["blob"], opened["dek"]
    header, size = parse_header(blob)
    caught: list[BaseException] = []
    attempts: list[Callable[[], object]] = [
        lambda: envcrypt.decrypt(blob[:-1]),
        lambda: envcrypt.decrypt(blob[: size + 10]),
        lambda: envcrypt.decrypt(blob[:size] + bytes(BODY_PREFIX_SIZE) + blob[size + BODY_PREFIX_SIZE :]),
        lambda: envcrypt.decrypt(blob, encryption_context={"k": "w"}),
        lambda: open_message(dek, b"other context", blob[size : size + BODY_PREFIX_SIZE]),
        lambda: envcrypt.open_reader(io.BytesIO(blob[:-3])).read(),
    ]
    for attempt in attempts:
        with pytest.raises(EnvcryptError) as info:
            attempt()
        caught.append(info.value)
    for exc in caught:
        text = repr(exc) + str(exc) + repr(exc.args) + repr(exc.__cause__) + repr(exc.__context__)
        assert_no_secret(text, dek, opened["aead_key"])


def test_closed_writer_and_reader_raise_closed_error(opened: dict[str, Any]) -> None:
    writer, reader = opened["writer"], opened["reader"]
    writer.close()
    reader.close()
    with pytest.raises(ClosedError):
        writer.write(b"x")
    with pytest.raises(ClosedError):
        reader.read(1)
    with pytest.raises(ClosedError):
        reader.readinto(bytearray(1))
