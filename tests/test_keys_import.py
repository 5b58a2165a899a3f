"""Import (raw and BYOK), backup/restore, sign/verify with vault keys."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import envcrypt
from envcrypt.errors import (
    IntegrityError,
    InvalidSignatureError,
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyStateError,
    KeyUsageError,
    WrongKeyError,
)
from envcrypt.keys import vault as vault_mod
from envcrypt.keys.byok import wrap_for_transfer
from envcrypt.keys.vault import LocalVault

#: the keys this file's envcrypt.decrypt calls accept (a reader names the keys it trusts)
TRUSTED = ["local:eu", "local:k", "local:byo", "local:customer"]

FAST = {"memory_cost": 8 * 1024, "iterations": 1, "lanes": 1}


@functools.cache
def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    return LocalVault(_isolated_vault)


def test_import_raw_aes_key(vault: LocalVault) -> None:
    material = os.urandom(32)
    assert vault.import_key("byo", material) == "local:byo/1"
    blob = envcrypt.encrypt(b"data", "local:byo")
    # the slot is RFC 5649 wrap under exactly the imported bytes
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

    slot = envcrypt.inspect(blob).key_slots[0]
    assert len(aes_key_unwrap_with_padding(material, slot.wrapped_dek)) == 32
    assert vault.import_key("byo", os.urandom(32)) == "local:byo/2"  # a new version
    with pytest.raises(KeyUsageError):
        vault.import_key("bad", b"short")
    with pytest.raises(KeyStateError):
        vault.import_key("byo", _rsa_pem(), kind="rsa")  # kind mismatch


def test_import_rejects_wrong_private_keys(vault: LocalVault) -> None:
    ec_pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(KeyUsageError, match="P-256"):
        vault.import_key("e", ec_pem, kind="ec-p256")
    with pytest.raises(KeyUsageError, match="RSA"):
        vault.import_key("r", ec_pem, kind="rsa")
    with pytest.raises(KeyUsageError):
        vault.import_key("r", b"not a key", kind="rsa")


def test_byok_roundtrip(vault: LocalVault) -> None:
    transfer_uri, public_pem = vault.create_transfer_key("transfer")
    material = os.urandom(32)
    package = wrap_for_transfer(public_pem, material)
    assert material not in package
    assert vault.import_byok("customer", transfer_uri, package) == "local:customer/1"
    assert vault.show_key("customer")["versions"][0]["origin"] == "byok"
    blob = envcrypt.encrypt(b"data", "local:customer")
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

    assert len(aes_key_unwrap_with_padding(material, envcrypt.inspect(blob).key_slots[0].wrapped_dek)) == 32
    # the transfer key only unwraps BYOK packages: no DEK wrapping, no signing
    with pytest.raises(KeyAccessDeniedError):
        envcrypt.encrypt(b"data", "local:transfer")
    tampered = bytearray(package)
    tampered[-1] ^= 1
    with pytest.raises(WrongKeyError):
        vault.import_byok("customer2", transfer_uri, bytes(tampered))


def test_byok_needs_a_transfer_key(vault: LocalVault) -> None:
    vault.import_key("plain-rsa", _rsa_pem(), kind="rsa", ops=["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    package = wrap_for_transfer(vault.public_key_pem("plain-rsa"), os.urandom(32))
    with pytest.raises(KeyAccessDeniedError):
        vault.import_byok("c", "plain-rsa", package)


def test_backup_restore_with_passphrase_across_vaults(vault: LocalVault, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("envcrypt.keys.byok.ARGON2_DEFAULT", FAST)
    vault.create_key("eu")
    vault.rotate_key("eu")
    old = envcrypt.encrypt(b"v1", "local:eu/1")
    backup = vault.backup_key("eu", passphrase="pw")
    assert (vault.path / "master.key").read_bytes() not in backup
    other = LocalVault(tmp_path / "other")
    with pytest.raises(IntegrityError):
        other.restore_key(backup, passphrase="nope")
    assert other.restore_key(backup, passphrase="pw") == "local:eu"
    assert envcrypt.decrypt(old, trusted_keys=TRUSTED, vault=str(other.path)) == b"v1"
    with pytest.raises(KeyStateError):
        other.restore_key(backup, passphrase="pw")


def test_backup_restores_after_purge(vault: LocalVault) -> None:
    vault.create_key("eu")
    blob = envcrypt.encrypt(b"data", "local:eu")
    backup = vault.backup_key("eu")
    vault.delete_key("eu")
    vault.purge_key("eu")
    with pytest.raises(KeyDeletedError):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    with pytest.raises(KeyStateError, match="force"):  # over a tombstone: only when forced
        vault.restore_key(backup)
    vault.restore_key(backup, force=True)
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == b"data"


def test_vault_sealed_backup_does_not_open_elsewhere(vault: LocalVault, tmp_path: Path) -> None:
    vault.create_key("eu")
    backup = vault.backup_key("eu")
    edited = backup.replace(b'"name": "eu"', b'"name": "ev"')
    with pytest.raises(IntegrityError):
        vault.restore_key(edited)
    with pytest.raises(IntegrityError):
        LocalVault(tmp_path / "other").restore_key(backup)


def test_sign_verify_ec_and_rsa(vault: LocalVault) -> None:
    assert vault.create_key("ec", "ec-p256") == "local:ec/1"
    vault.import_key("rsa", _rsa_pem(), kind="rsa")
    for uri in ("local:ec", "local:rsa"):
        signature = vault_mod.sign(uri, b"manifest")
        assert vault_mod.verify(uri, b"manifest", signature) == f"{uri}/1"
        with pytest.raises(InvalidSignatureError):
            vault_mod.verify(uri, b"manifest!", signature)
    signer, signature = vault_mod.sign_versioned("local:ec", b"m")
    vault.rotate_key("ec")
    # an unversioned verify still finds the older version
    assert vault_mod.verify("local:ec", b"m", signature) == signer == "local:ec/1"
    assert "BEGIN PUBLIC KEY" in vault_mod.public_key_pem("local:ec/1")


def test_sign_state_errors(vault: LocalVault) -> None:
    vault.create_key("aes")
    with pytest.raises(KeyAccessDeniedError):
        vault_mod.sign("local:aes", b"m")
    vault.create_key("ec", "ec-p256", ops=["verify"])
    with pytest.raises(KeyAccessDeniedError):
        vault_mod.sign("local:ec", b"m")
    vault.set_ops("ec", ["sign", "verify"])
    signature = vault_mod.sign("local:ec", b"m")
    vault.disable_key("ec")
    with pytest.raises(KeyDisabledError):
        vault_mod.verify("local:ec/1", b"m", signature)


def test_rsa_encrypt_decrypt(vault: LocalVault) -> None:
    vault.import_key("rsa", _rsa_pem(), kind="rsa", ops=["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    uri, ct = vault.encrypt("rsa", b"short secret")
    assert vault.decrypt(uri, ct) == b"short secret"
    with pytest.raises(WrongKeyError):
        vault.decrypt(uri, ct[:-1] + bytes([ct[-1] ^ 1]))


def test_transfer_key_never_unwraps_dek_slots(vault: LocalVault) -> None:
    from cryptography.hazmat.primitives import serialization as ser

    from envcrypt.format import KeySlot
    from envcrypt.keys.base import WRAP_RSA_OAEP_SHA256, get_resolver
    from envcrypt.keys.vault_crypto import rsa_oaep_encrypt

    transfer_uri, public_pem = vault.create_transfer_key("transfer")
    assert vault.show_key("transfer")["ops"] == ["import"]
    wrapped = rsa_oaep_encrypt(ser.load_pem_public_key(public_pem.encode()), os.urandom(32))
    with pytest.raises(KeyAccessDeniedError):
        vault.unwrap_key(transfer_uri, wrapped)
    with pytest.raises(KeyAccessDeniedError):  # a DEK slot someone wrapped to the transfer key
        get_resolver("local").unwrap(KeySlot(transfer_uri, WRAP_RSA_OAEP_SHA256, wrapped), {})
    with pytest.raises(KeyUsageError):
        vault.set_ops("transfer", ["unwrapKey"])
    with pytest.raises(KeyUsageError):  # an ordinary key cannot be given the import op
        vault.create_key("plain", "rsa", ops=["import"])
    assert vault.import_byok("c", transfer_uri, wrap_for_transfer(public_pem, os.urandom(32))) == "local:c/1"


def test_restore_over_a_tombstone_keeps_purged_through(vault: LocalVault) -> None:
    vault.create_key("k")
    backup = vault.backup_key("k")  # versions: 1
    old = envcrypt.encrypt(b"v3 data", "local:k") if vault.rotate_key("k") and vault.rotate_key("k") else b""
    assert envcrypt.inspect(old).key_uris == ["local:k/3"]
    vault.delete_key("k")
    vault.purge_key("k")  # tombstone: purged_through 3
    assert vault.restore_key(backup, force=True) == "local:k"
    assert vault.rotate_key("k") == "local:k/4"  # never a second version 3
    with pytest.raises(KeyDeletedError):
        envcrypt.decrypt(old, trusted_keys=TRUSTED)
