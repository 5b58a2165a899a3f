"""Builds the format's golden vectors from fixed keys, salts and plaintexts.

``python -m tests.golden`` writes ``tests/vectors/envcrypt_v1.json``.  That file
is kept forever: the tests check that the code still produces every valid
object byte for byte and still rejects every negative case with its error.
Never regenerate it to make a test pass; add a new file for a new version.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from envcrypt.chunked import new_message
from envcrypt.errors import KeyNotFoundError, WrongKeyError
from envcrypt.format import (
    BODY_PREFIX_SIZE,
    FIXED_PREFIX_SIZE,
    SEALED_CHUNK_SIZE,
    Header,
    KeySlot,
    body_size,
)
from envcrypt.keys.base import WRAP_AES256_KWP

VECTOR_FILE = Path(__file__).parent / "vectors" / "envcrypt_v1.json"
KEKS = {
    "golden:kek-1": bytes(range(32)),
    "golden:kek-2": bytes(range(100, 132)),
}
DEK = bytes.fromhex("5f" * 16 + "a7" * 16)
SALT = bytes(range(200, 224))


class GoldenResolver:
    """Test resolver for ``golden:`` URIs: AES-KWP under the fixed KEKs above."""

    scheme: ClassVar[str] = "golden"
    options: ClassVar[frozenset[str]] = frozenset()

    def identity(self, key_uri: str) -> str:
        return key_uri

    def wrap(self, key_uri: str, dek: bytes, encryption_context: Mapping[str, str]) -> KeySlot:
        return KeySlot(key_uri, WRAP_AES256_KWP, aes_key_wrap_with_padding(KEKS[key_uri], dek))

    def unwrap(self, slot: KeySlot, encryption_context: Mapping[str, str]) -> bytes:
        if slot.key_uri not in KEKS:
            raise KeyNotFoundError(slot.key_uri)
        try:
            return aes_key_unwrap_with_padding(KEKS[slot.key_uri], slot.wrapped_dek)
        except InvalidUnwrap:
            raise WrongKeyError("bad wrap") from None


def plaintext(length: int) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(length))


def build_object(length: int, context: Mapping[str, str], key_uris: list[str]) -> bytes:
    """An object from the fixed DEK and salt: the reference for the valid vectors."""
    resolver = GoldenResolver()
    header = Header(dict(context), tuple(resolver.wrap(u, DEK, context) for u in key_uris))
    prefix, cipher = new_message(DEK, header.immutable, _salt=SALT)
    data = plaintext(length)
    body = bytearray(body_size(length) - BODY_PREFIX_SIZE)
    cipher.seal(0, memoryview(data), memoryview(body), final=True)
    return header.pack() + prefix + bytes(body)


VALID = [
    ("empty plaintext, no context", 0, {}, ["golden:kek-1"]),
    ("5 bytes, one context pair", 5, {"tenant": "a"}, ["golden:kek-1"]),
    ("one byte short of a chunk", 16383, {}, ["golden:kek-1"]),
    ("exactly one chunk: a full chunk and an empty final chunk", 16384, {}, ["golden:kek-1"]),
    ("one byte over a chunk", 16385, {"dataset": "x", "tenant": "b"}, ["golden:kek-1"]),
    ("two key slots", 2 * 16384 + 100, {"purpose": "golden"}, ["golden:kek-1", "golden:kek-2"]),
    ("unicode context", 77, {"région": "eu-west-1 ✓"}, ["golden:kek-2"]),
]


def _negatives(base: bytes, two_chunks: bytes) -> list[tuple[str, bytes, str]]:
    header_size = len(base) - body_size(5)
    h = header_size

    def edit(fn: Callable[[bytearray], Any], source: bytes = base) -> bytes:
        b = bytearray(source)
        fn(b)
        return bytes(b)

    def flip(i: int, source: bytes = base) -> bytes:
        return edit(lambda b: b.__setitem__(i, b[i] ^ 0x01), source)

    h2 = len(two_chunks) - body_size(2 * 16384 + 100)
    chunk0 = h2 + BODY_PREFIX_SIZE
    swapped = bytearray(two_chunks)
    a = bytes(swapped[chunk0 : chunk0 + SEALED_CHUNK_SIZE])
    b2 = bytes(swapped[chunk0 + SEALED_CHUNK_SIZE : chunk0 + 2 * SEALED_CHUNK_SIZE])
    swapped[chunk0 : chunk0 + SEALED_CHUNK_SIZE] = b2
    swapped[chunk0 + SEALED_CHUNK_SIZE : chunk0 + 2 * SEALED_CHUNK_SIZE] = a
    out = [
        ("empty input", b"", "NotEncryptedError"),
        ("a Parquet file", b"PAR1" + bytes(60) + b"PAR1", "NotEncryptedError"),
        ("a gzip stream", bytes.fromhex("1f8b0800000000000003") + bytes(20), "NotEncryptedError"),
        ("input ends inside the magic", base[:5], "MalformedHeaderError"),
        ("input ends inside the fixed header", base[:12], "MalformedHeaderError"),
        ("input ends inside the key slots", base[: h - 3], "MalformedHeaderError"),
        ("format version 2", edit(lambda b: b.__setitem__(8, 2)), "UnsupportedVersionError"),
        ("suite 2", edit(lambda b: b.__setitem__(9, 2)), "UnsupportedVersionError"),
        ("reserved flags set", edit(lambda b: b.__setitem__(11, 1)), "MalformedHeaderError"),
        ("context length 2**32-1", edit(lambda b: b.__setitem__(slice(12, 16), b"\xff\xff\xff\xff")), "MalformedHeaderError"),
        ("slot block length 2**32-1",
         edit(lambda b: b.__setitem__(slice(FIXED_PREFIX_SIZE + _ctx_len(b), FIXED_PREFIX_SIZE + _ctx_len(b) + 4), b"\xff\xff\xff\xff")),
         "MalformedHeaderError"),
        ("zero key slots",
         edit(lambda b: b.__setitem__(slice(FIXED_PREFIX_SIZE + _ctx_len(b) + 4, FIXED_PREFIX_SIZE + _ctx_len(b) + 6), b"\x00\x00")),
         "MalformedHeaderError"),
        ("context value edited (same length)", edit(lambda b: b.__setitem__(FIXED_PREFIX_SIZE + _ctx_len(b) - 1, ord("z"))), "WrongKeyError"),
        ("wrapped DEK edited", flip(h - 1), "WrongKeyError"),
        ("salt edited", flip(h), "WrongKeyError"),
        ("commitment edited", flip(h + 30), "WrongKeyError"),
        ("chunk ciphertext edited", flip(h + BODY_PREFIX_SIZE + 2), "IntegrityError"),
        ("tag edited", flip(len(base) - 1), "IntegrityError"),
        ("final chunk truncated by one byte", base[:-1], "IntegrityError"),
        ("body cut to the salt and commitment", base[: h + BODY_PREFIX_SIZE], "IntegrityError"),
        ("one trailing byte", base + b"\x00", "IntegrityError"),
        ("two full chunks swapped", bytes(swapped), "IntegrityError"),
        ("final chunk dropped (cut at a chunk boundary)", two_chunks[: chunk0 + 2 * SEALED_CHUNK_SIZE], "IntegrityError"),
    ]
    return out


def _ctx_len(b: bytearray) -> int:
    return int(struct.unpack(">I", bytes(b[12:16]))[0])


def generate() -> dict[str, Any]:
    tests: list[dict[str, Any]] = []
    for comment, length, context, uris in VALID:
        tests.append({
            "tcId": len(tests) + 1, "comment": comment, "result": "valid",
            "plaintextLength": length, "encryptionContext": context, "keyUris": uris,
            "object": build_object(length, context, uris).hex(),
        })
    base = build_object(5, {"tenant": "a"}, ["golden:kek-1"])
    two = build_object(2 * 16384 + 100, {"purpose": "golden"}, ["golden:kek-1", "golden:kek-2"])
    for comment, blob, error in _negatives(base, two):
        tests.append({"tcId": len(tests) + 1, "comment": comment, "result": "invalid", "error": error, "object": blob.hex()})
    return {
        "format": "envcrypt object format version 1 (FORMAT.md)",
        "notes": [
            "Keys: golden:kek-1 = bytes 0..31, golden:kek-2 = bytes 100..131 (AES-256 KEKs, AES-KWP).",
            "DEK = 16 x 0x5f || 16 x 0xa7; salt = bytes 200..223.",
            "Plaintext of length n: byte i = (7*i + 3) mod 251.",
            "Invalid vectors name the envcrypt.errors class that decrypt() must raise.",
        ],
        "dek": DEK.hex(), "salt": SALT.hex(), "keks": {k: v.hex() for k, v in KEKS.items()},
        "tests": tests,
    }


if __name__ == "__main__":
    VECTOR_FILE.parent.mkdir(parents=True, exist_ok=True)
    VECTOR_FILE.write_text(json.dumps(generate(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {VECTOR_FILE}")
