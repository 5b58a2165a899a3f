"""The small-object fast paths (issue 13): one AEAD call for a body of one chunk, the empty
context's header, and the memos of the vault's hot path; each gives what the general path gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import envcrypt
from envcrypt.chunked import ChunkCipher, new_message
from envcrypt.errors import IntegrityError, InvalidKeyUriError, MalformedHeaderError
from envcrypt.format import CHUNK_SIZE, Header, KeySlot, body_size, encode_context, parse_header
from envcrypt.keys import audit_commit, vault
from envcrypt.keys.vault import LocalVault
from envcrypt.keys.vault_index import MAX_CACHED_RECORDS

C = CHUNK_SIZE


@pytest.mark.parametrize("size", [0, 1, 1024, C - 1])
def test_one_chunk_is_sealed_as_the_chunked_path_seals_it(size: int) -> None:
    data, dek, salt = os.urandom(size), os.urandom(32), os.urandom(24)
    prefix, cipher = new_message(dek, b"context", _salt=salt)
    general = bytearray(body_size(size) - 56)
    cipher.seal(0, memoryview(data), memoryview(general), final=True)
    assert cipher.seal_single(data) == bytes(general)
    out = bytearray(size)
    cipher.open(0, memoryview(general), memoryview(out), final=True)
    assert cipher.open_single(bytes(general)) == bytes(out) == data


def test_one_chunk_paths_refuse_what_is_not_one_chunk() -> None:
    _, cipher = new_message(os.urandom(32), b"")
    with pytest.raises(ValueError):
        cipher.seal_single(bytes(C))  # a full chunk is not a final chunk
    sealed = cipher.seal_single(b"x" * 100)
    for bad in (sealed[:15], sealed[:-1], sealed + b"\0", bytes(C + 16), b""):
        with pytest.raises(IntegrityError):
            cipher.open_single(bad)
    flipped = bytearray(sealed)
    flipped[0] ^= 1
    with pytest.raises(IntegrityError):
        cipher.open_single(bytes(flipped))


def test_one_chunk_under_another_message_key_fails() -> None:
    dek = os.urandom(32)
    _, first = new_message(dek, b"")
    _, second = new_message(dek, b"")  # same DEK, its own salt: another AEAD key and nonce
    with pytest.raises(IntegrityError):
        second.open_single(first.seal_single(b"payload"))


@pytest.mark.parametrize("size", [0, 1024, C - 1, C, C + 1])
def test_small_objects_read_alike_by_every_reader(size: int) -> None:
    data = os.urandom(size)
    blob = envcrypt.encrypt(data)
    assert envcrypt.decrypt(blob) == data
    with envcrypt.open_reader(blob) as reader:
        assert reader.read() == data


def test_the_empty_context_header_is_parsed_and_packed_as_before() -> None:
    slots = (KeySlot("local:k/1", 1, b"w" * 40),)
    header = Header({}, slots)
    assert header.immutable == b"ENVCRYPT\x01\x01\x00\x00\x00\x00\x00\x02" + encode_context({})
    parsed, size = parse_header(header.pack())
    assert parsed == header and parsed.immutable == header.immutable and size == len(header.pack())
    assert Header({"a": "b"}, slots).immutable != header.immutable
    # a count of zero followed by a stray byte is not the empty context
    raw = bytearray(header.pack())
    raw[15] = 3
    raw[18:18] = b"\0"
    with pytest.raises(MalformedHeaderError):
        parse_header(bytes(raw))


def test_slot_parsing_keeps_every_bound() -> None:
    good = Header({}, (KeySlot("local:k/1", 1, b"w" * 40),)).pack()
    for cut in range(22, len(good)):  # every truncation of the slot block, its length fixed up
        raw = bytearray(good[:cut])
        raw[18:22] = (cut - 22).to_bytes(4, "big")
        with pytest.raises(MalformedHeaderError):
            parse_header(bytes(raw))
    bad_utf8 = bytearray(good)
    bad_utf8[26] = 0xFF  # inside the key URI
    with pytest.raises(MalformedHeaderError, match="UTF-8"):
        parse_header(bytes(bad_utf8))


def test_an_invalid_reference_is_refused_and_audited_every_time(_isolated_vault: Path) -> None:
    v = LocalVault(_isolated_vault)
    v.create_key("k")
    for _ in range(2):
        with pytest.raises(InvalidKeyUriError):
            v.wrap_key("no such/name", os.urandom(32))
        with pytest.raises(InvalidKeyUriError):
            v.wrap_key("k/0", os.urandom(32))
    refused = [e for e in v.audit.entries() if e["op"] == "wrapKey" and e["outcome"] == "InvalidKeyUriError"]
    assert len(refused) == 4


def test_the_reference_memo_is_bounded_and_skips_str_subclasses() -> None:
    class Name(str):
        pass

    vault._parse_ref_cached.cache_clear()
    for i in range(5000):  # slot URIs come from storage: they cannot grow it past its bound
        vault._parse_ref(f"local:n{i}/1")
    assert vault._parse_ref_cached.cache_info().currsize <= 4096
    before = vault._parse_ref_cached.cache_info()
    assert vault._parse_ref(Name("k/2")) == ("k", 2)
    after = vault._parse_ref_cached.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)


def test_record_paths_are_bounded(_isolated_vault: Path) -> None:
    store = LocalVault(_isolated_vault).store
    for i in range(MAX_CACHED_RECORDS + 10):
        root, directory, path = store._record_paths(("keys", f"n{i}"))
        assert path == os.path.join(directory, f"n{i}.json") and directory == os.path.join(root, "keys")
    assert len(store._paths) <= MAX_CACHED_RECORDS


def test_audit_pieces_are_bounded() -> None:
    for i in range(audit_commit._PIECES_SIZE + 10):
        entry = audit_commit.new_entry("wrapKey", f"n{i}", 1, "ok", {})
        entry["seq"], entry["prev"] = 1, "0" * 64
        audit_commit.line_body(entry)
    assert len(audit_commit._PIECES) <= audit_commit._PIECES_SIZE


def test_chunk_cipher_single_paths_hold_no_key_in_repr() -> None:
    _, cipher = new_message(os.urandom(32), b"")
    assert repr(cipher) == "<ChunkCipher>" and isinstance(cipher, ChunkCipher)
