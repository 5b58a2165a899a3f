"""Column encryption keys (CEKs): made once, stored wrapped, opened under the trust rule.

A column encryption key is 32 random bytes.  It is stored as an **envcrypt v1
object whose plaintext is the CEK** (FORMAT.md), with the authenticated
encryption context ``{"envcrypt:column-key": KEY_ID}`` (``KEY_ID``: 16 random
bytes, hex) plus the caller's context.  So the column master key (a key URI:
``local:pii``, ``aws-kms://...``) wraps it through the key resolvers exactly as
it wraps any object's DEK; opening it is ``envcrypt.decrypt`` with the reader's
trusted keys (:func:`envcrypt.slots.open_slots`, the one slot-trial function);
rotating it is ``envcrypt.rewrap`` (new key slots, same CEK).

The wrapped key travels as bytes in field metadata, or as a text *token*
(``eck1.`` + URL-safe base64) that a policy names for deterministic columns,
so that every file and every process uses the same CEK.  Neither is a secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._secret import SecretBytes
from ..envelope import decrypt, encrypt
from ..errors import MalformedHeaderError
from ..format import MAX_HEADER_SIZE, parse_header
from ..rewrap import rewrap
from ..slots import key_name

__all__ = ["ColumnKey", "CONTEXT_KEY", "TOKEN_PREFIX", "new_key", "open_key", "token_of", "blob_of",
           "key_uris", "rotate_blob", "CEK_SIZE", "KEY_ID_SIZE"]

CEK_SIZE = 32
KEY_ID_SIZE = 16
CONTEXT_KEY = "envcrypt:column-key"
TOKEN_PREFIX = "eck1."
INFO_GCM = b"envcrypt columns v2 AES-256-GCM"
INFO_SIV = b"envcrypt columns v2 AES-256-SIV"
INFO_MAC = b"envcrypt columns v2 metadata HMAC-SHA256"


def _hkdf(ikm: bytes, length: int, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


class ColumnKey:
    """An opened column encryption key.  Holds key material: no informative repr, no pickle."""

    __slots__ = ("key_id", "blob", "_cek")

    def __init__(self, cek: bytes, key_id: bytes, blob: bytes) -> None:
        if len(cek) != CEK_SIZE or len(key_id) != KEY_ID_SIZE:
            raise MalformedHeaderError("a column key is 32 bytes with a 16-byte key id")
        self._cek, self.key_id, self.blob = cek, key_id, blob

    def __repr__(self) -> str:
        return f"<ColumnKey {self.key_id.hex()}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a ColumnKey holds key material and cannot be pickled (pass its token)")

    @property
    def token(self) -> str:
        return token_of(self.blob)

    def gcm_key(self, salt: bytes) -> bytes:
        """The AES-256-GCM key of one batch: HKDF-SHA256(CEK, salt, INFO_GCM); the salt (16
        random bytes per batch) starts every randomized cell of the batch."""
        return _hkdf(self._cek, 32, salt, INFO_GCM)

    def siv_key(self) -> bytes:
        """The 64-byte AES-256-SIV key of deterministic cells: HKDF-SHA256(CEK, no salt, INFO_SIV)."""
        return _hkdf(self._cek, 64, None, INFO_SIV)

    def mac(self, message: bytes) -> bytes:
        """HMAC-SHA256 of the column metadata under HKDF-SHA256(CEK, no salt, INFO_MAC)."""
        return hmac.digest(_hkdf(self._cek, 32, None, INFO_MAC), message, "sha256")


def token_of(blob: bytes) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(blob).decode("ascii")


def blob_of(token: str) -> bytes:
    """The wrapped column key inside a token (MalformedHeaderError when it is not one)."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        raise MalformedHeaderError(f"not a column key token (it starts with {TOKEN_PREFIX!r})")
    try:
        return base64.urlsafe_b64decode(token[len(TOKEN_PREFIX) :].encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise MalformedHeaderError("a column key token is not base64") from exc


def key_id_of(blob: bytes) -> bytes:
    header, _ = parse_header(memoryview(blob)[:MAX_HEADER_SIZE])
    text = header.encryption_context.get(CONTEXT_KEY, "")
    try:
        key_id = bytes.fromhex(text)
    except ValueError:
        key_id = b""
    if len(key_id) != KEY_ID_SIZE:
        raise MalformedHeaderError(f"a wrapped column key has no {CONTEXT_KEY!r} of 16 bytes in its context")
    return key_id


def key_uris(blob: bytes) -> list[str]:
    """The master key URIs of a wrapped column key's slots (no key is used)."""
    header, _ = parse_header(memoryview(blob)[:MAX_HEADER_SIZE])
    return [slot.key_uri for slot in header.key_slots]


def new_key(key_uri: str | Sequence[str], encryption_context: Mapping[str, str] | None,
            options: Mapping[str, Any]) -> ColumnKey:
    """A fresh CEK wrapped under ``key_uri`` (one slot per master key)."""
    context = dict(encryption_context or {})
    if CONTEXT_KEY in context:
        raise MalformedHeaderError(f"{CONTEXT_KEY!r} is reserved in a column key's encryption context")
    cek, key_id = SecretBytes(os.urandom(CEK_SIZE)), os.urandom(KEY_ID_SIZE)  # cek hidden from reprs
    context[CONTEXT_KEY] = key_id.hex()
    blob = encrypt(cek, key_uri, encryption_context=context, **options)
    return ColumnKey(cek, key_id, blob)


def open_key(blob: bytes, trusted_keys: Sequence[str], encryption_context: Mapping[str, str] | None,
             options: Mapping[str, Any]) -> ColumnKey:
    """Open a wrapped column key through a slot naming a trusted key (``envcrypt.decrypt``)."""
    key_id = key_id_of(blob)
    cek = decrypt(blob, trusted_keys=list(trusted_keys), encryption_context=encryption_context, **options)
    if len(cek) != CEK_SIZE:
        raise MalformedHeaderError("a wrapped column key does not hold a 32-byte key")
    return ColumnKey(cek, key_id, blob)


def own_trust(blob: bytes) -> list[str]:
    """The key names a column key token's own slots name: what a writer trusts for a token its
    configuration gave it (the token is configuration, like a key URI)."""
    return list(dict.fromkeys(key_name(u) for u in key_uris(blob)))


def rotate_blob(blob: bytes, to: str | Sequence[str], trusted_keys: Sequence[str] | None,
                options: Mapping[str, Any]) -> bytes:
    """The wrapped column key under ``to``: new key slots, the same CEK and key id."""
    return rewrap(blob, to, trusted_keys=list(trusted_keys) if trusted_keys is not None else None, **options)
