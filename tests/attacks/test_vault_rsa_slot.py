"""A signing key's public key is public: a key slot made with it must not open.

Before: rsa keys defaulted to sign, verify *and* wrapKey, unwrapKey, encrypt, decrypt, so
anyone with the public key of a signing key could RSA-OAEP-wrap a DEK of their choice
and the vault would unwrap it.  Now rsa keys default to sign/verify and one rsa key never
mixes the two families.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from envcrypt.chunked import new_message
from envcrypt.errors import KeyAccessDeniedError, KeyUsageError
from envcrypt.format import Header, KeySlot, parse_header
from envcrypt.keys.base import WRAP_RSA_OAEP_SHA256
from envcrypt.keys.vault import LocalVault, LocalVaultResolver

WRAP_OPS = ["wrapKey", "unwrapKey", "encrypt", "decrypt"]


def _forged_object(public_pem: str, key_uri: str, dek: bytes, plaintext: bytes) -> bytes:
    """An envcrypt object made by hand: one RSA-OAEP-SHA256 key slot under ``public_pem``."""
    public = serialization.load_pem_public_key(public_pem.encode())
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = public.encrypt(dek, oaep)  # type: ignore[union-attr, call-arg]
    header = Header({}, (KeySlot(key_uri, WRAP_RSA_OAEP_SHA256, wrapped),))
    prefix, cipher = new_message(dek, header.immutable)
    body = bytearray(len(plaintext) + 16)
    cipher.seal(0, memoryview(plaintext), memoryview(body), True)
    return header.pack() + prefix + bytes(body)


def test_slot_forged_with_a_signing_keys_public_key_does_not_open(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    assert vault.create_key("signer", "rsa") == "local:signer/1"  # defaults: a signing key
    dek = os.urandom(32)
    blob = _forged_object(vault.public_key_pem("signer"), "local:signer/1", dek, b"attacker data")
    header, _ = parse_header(blob)
    (slot,) = header.key_slots
    with pytest.raises(KeyAccessDeniedError):
        LocalVaultResolver(vault).unwrap(slot, {})
    with pytest.raises(KeyAccessDeniedError):
        LocalVaultResolver(LocalVault(_isolated_vault)).unwrap(slot, header.encryption_context)
    # the signing key still signs
    uri, signature = vault.sign("signer", b"release")
    assert vault.verify(uri, b"release", signature) == "local:signer/1"


def test_a_wrapping_rsa_key_is_asked_for_and_opens_its_slots(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("wrapper", "rsa", ops=WRAP_OPS)
    dek = os.urandom(32)
    blob = _forged_object(vault.public_key_pem("wrapper"), "local:wrapper/1", dek, b"data")
    (slot,) = parse_header(blob)[0].key_slots
    assert LocalVaultResolver(vault).unwrap(slot, {}) == dek
    with pytest.raises(KeyAccessDeniedError):
        vault.sign("wrapper", b"m")


@pytest.mark.parametrize("ops", [
    ["sign", "unwrapKey"], ["verify", "decrypt"], ["sign", "verify", "wrapKey", "unwrapKey", "encrypt", "decrypt"],
])
def test_rsa_sign_and_encrypt_families_never_mix(_isolated_vault: Path, ops: list[str]) -> None:
    vault = LocalVault(_isolated_vault)
    with pytest.raises(KeyUsageError, match="--ops"):
        vault.create_key("mixed", "rsa", ops=ops)
    vault.create_key("signer", "rsa")
    with pytest.raises(KeyUsageError, match="--kind rsa --ops"):
        vault.set_ops("signer", ops)
    assert vault.show_key("signer")["ops"] == ["sign", "verify"]
    with pytest.raises(KeyUsageError, match="--ops"):
        vault.import_key("imported", _rsa_pem(), kind="rsa", ops=ops)


def _rsa_pem() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
