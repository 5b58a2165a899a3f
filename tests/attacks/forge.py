"""What an attacker with write access to the storage can build from public information only.

The object format is public (FORMAT.md): anyone can pick a DEK, seal a body with it
and put any key slots in front.  These helpers do exactly that, with `cryptography`
and the format module, never with a master key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from envcrypt.chunked import new_message
from envcrypt.format import Header, KeySlot
from envcrypt.keys.base import WRAP_RSA_OAEP_SHA256

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def seal(dek: bytes, slots: tuple[KeySlot, ...], plaintext: bytes,
         context: Mapping[str, str] | None = None) -> bytes:
    """A complete, well-formed object: ``slots`` in front of a body sealed under ``dek``."""
    header = Header(dict(context or {}), slots)
    prefix, cipher = new_message(dek, header.immutable)
    chunks = len(plaintext) // 16384 + 1
    body = bytearray(len(plaintext) + 16 * chunks)
    cipher.seal(0, memoryview(plaintext), memoryview(body), True)
    return header.pack() + prefix + bytes(body)


def rsa_forgery(public_pem: str, key_uri: str, plaintext: bytes,
                context: Mapping[str, str] | None = None) -> bytes:
    """An object whose only slot RSA-OAEP-wraps the attacker's DEK under a *public* key."""
    dek = os.urandom(32)
    public = serialization.load_pem_public_key(public_pem.encode())
    wrapped = public.encrypt(dek, OAEP)  # type: ignore[union-attr, call-arg]
    return seal(dek, (KeySlot(key_uri, WRAP_RSA_OAEP_SHA256, wrapped),), plaintext, context)
