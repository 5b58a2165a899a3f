"""Crafted key backups: material that ``import_key`` refuses is refused by ``restore_key`` too
(one validator per version), and so is a record of a shape ``create_key`` would not make.

The backups are built with ``byok.pack_backup`` and a passphrase, as an attacker who knows
the backup format would.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from envcrypt.errors import KeyUsageError, VaultError
from envcrypt.keys.byok import pack_backup
from envcrypt.keys.vault import LocalVault
from envcrypt.keys.vault_store import Argon2Params

FAST = Argon2Params(8 * 1024, 1, 1)
WRAP_OPS = ["decrypt", "encrypt", "unwrapKey", "wrapKey"]


def _no_vault_seal(label: str, data: bytes) -> str:
    raise AssertionError("a passphrase backup never seals under a vault")


def _crafted_backup(name: str, kind: str, material: bytes, ops: list[str], **record: Any) -> bytes:
    fields: dict[str, Any] = {
        "name": name, "kind": kind, "ops": ops, "enabled": True, "created": 1, "not_before": None,
        "expires": None, "deleted": None, "scheduled_purge": None, "purged": None, "transfer": False,
        "purged_through": 0,
        "versions": [{"version": 1, "created": 1, "enabled": True, "origin": "generated", "public": None}],
    }
    fields.update(record)
    payload = {"record": fields, "materials": {"1": base64.b64encode(material).decode()}}
    return pack_backup(name, payload, b"attacker", _no_vault_seal, FAST)


def _rsa_der(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _refused(vault: LocalVault, backup: bytes, name: str) -> None:
    with pytest.raises((KeyUsageError, VaultError)):
        vault.restore_key(backup, passphrase="attacker")
    assert not vault.key_exists(name)
    assert not (vault.path / "keys" / f"{name}.json").exists()


def test_short_aes256_key_in_a_backup_is_refused(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    _refused(vault, _crafted_backup("weak", "aes256", os.urandom(16), WRAP_OPS), "weak")
    _refused(vault, _crafted_backup("long", "aes256", os.urandom(64), WRAP_OPS), "long")


def test_1024_bit_rsa_key_in_a_backup_is_refused(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    _refused(vault, _crafted_backup("weak-rsa", "rsa", _rsa_der(1024), WRAP_OPS), "weak-rsa")
    _refused(vault, _crafted_backup("weak-signer", "rsa", _rsa_der(1024), ["sign", "verify"]), "weak-signer")


def test_backup_record_of_a_shape_create_would_refuse(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    material = os.urandom(32)
    # an aes256 key that claims to sign; an rsa key that both signs and decrypts; a planted field
    _refused(vault, _crafted_backup("a", "aes256", material, ["sign"]), "a")
    _refused(vault, _crafted_backup("b", "rsa", _rsa_der(2048), WRAP_OPS + ["sign", "verify"]), "b")
    _refused(vault, _crafted_backup("c", "aes256", material, WRAP_OPS, owner="attacker"), "c")
    _refused(vault, _crafted_backup("d", "aes256", material, WRAP_OPS, transfer=True), "d")


def test_well_formed_backup_still_restores(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.restore_key(_crafted_backup("good", "aes256", os.urandom(32), WRAP_OPS), passphrase="attacker")
    uri, wrapped = vault.wrap_key("good", os.urandom(32))
    assert uri == "local:good/1" and len(vault.unwrap_key(uri, wrapped)) == 32
