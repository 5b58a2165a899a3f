"""Moving key material in and out of the vault: BYOK transfer packages and key backups.

BYOK ("bring your own key"): the vault makes an RSA-3072 *transfer key* and
publishes its public key; the key owner packs their material with
:func:`wrap_for_transfer`::

    package = RSA-OAEP-SHA256(transfer_public, K)  ||  AES-KWP(K, material)

with a fresh AES-256 key ``K`` (the CKM_RSA_AES_KEY_WRAP layout that cloud
vaults use for BYOK).  The first ``modulus_bytes`` of the package are the RSA
ciphertext.  Material is 32 raw bytes for ``aes256`` or a PKCS#8 DER private key.

Backups: one key's record and raw material, as JSON, sealed with AES-256-GCM
under either a key derived from a passphrase (Argon2id, bounded parameters
stored in the backup: portable) or the vault master key (restores into the
same vault only, e.g. after a purge).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import IntegrityError, VaultError, WrongKeyError
from .vault_crypto import kwp_unwrap, kwp_wrap, rsa_oaep_decrypt, rsa_oaep_encrypt
from .vault_store import ARGON2_DEFAULT, BACKUP_ARGON2_MAX, SALT_SIZE, Argon2Params, b64d, b64e

__all__ = ["wrap_for_transfer", "unwrap_transfer", "pack_backup", "unpack_backup"]

BACKUP_FORMAT = "envcrypt-key-backup/1"
MAX_BACKUP_SIZE = 1024 * 1024


def wrap_for_transfer(transfer_public_pem: str | bytes, material: bytes) -> bytes:
    """Pack key material for import into a vault (run by the key owner, outside the vault)."""
    if isinstance(transfer_public_pem, str):
        transfer_public_pem = transfer_public_pem.encode("ascii")
    public = serialization.load_pem_public_key(transfer_public_pem)
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("a transfer key is an RSA public key")
    ephemeral = os.urandom(32)
    return rsa_oaep_encrypt(public, ephemeral) + kwp_wrap(ephemeral, material)


def unwrap_transfer(transfer_private: Any, package: bytes) -> bytes:
    """Recover the material from a BYOK package (inside the vault)."""
    size = transfer_private.key_size // 8
    if len(package) <= size + 8:
        raise WrongKeyError("the BYOK package is too short")
    ephemeral = rsa_oaep_decrypt(transfer_private, package[:size])
    return kwp_unwrap(ephemeral, package[size:])


def _aad(head: dict[str, Any]) -> bytes:
    return json.dumps(head, sort_keys=True, separators=(",", ":")).encode()


def pack_backup(
    name: str, payload: dict[str, Any], passphrase: bytes | None,
    seal: Callable[[str, bytes], str], params: Argon2Params | None = None,
) -> bytes:
    """Seal ``payload`` (a key record with raw material) into a backup blob."""
    plain = json.dumps(payload, sort_keys=True).encode()
    head: dict[str, Any] = {"format": BACKUP_FORMAT, "name": name}
    if passphrase is None:
        head["protection"] = "vault"
        body = seal(f"backup:{name}", plain)
    else:
        params = params or Argon2Params.from_config(ARGON2_DEFAULT)
        salt = os.urandom(SALT_SIZE)
        head.update(protection="passphrase", argon2id=params.as_dict(), salt=b64e(salt))
        nonce = os.urandom(12)
        body = b64e(nonce + AESGCM(params.derive(passphrase, salt)).encrypt(nonce, plain, _aad(head)))
    return json.dumps({**head, "sealed": body}, sort_keys=True).encode()


def unpack_backup(
    blob: bytes, passphrase: bytes | None, open_sealed: Callable[[str, str], bytes]
) -> tuple[str, dict[str, Any]]:
    """Open a backup blob: ``(name, payload)``.  IntegrityError when it does not open."""
    if len(blob) > MAX_BACKUP_SIZE:
        raise VaultError("key backup too large")
    try:
        outer = json.loads(blob)
    except (ValueError, TypeError):
        raise VaultError("not an envcrypt key backup") from None
    if not isinstance(outer, dict):
        raise VaultError("not an envcrypt key backup")
    head = {k: v for k, v in outer.items() if k != "sealed"}
    sealed, name = outer.get("sealed"), outer.get("name")
    if head.get("format") != BACKUP_FORMAT or not isinstance(name, str) or not isinstance(sealed, str):
        raise VaultError("not an envcrypt key backup (unknown format)")
    if head.get("protection") == "vault":
        try:
            plain = open_sealed(f"backup:{name}", sealed)
        except VaultError:
            raise IntegrityError("the key backup does not open in this vault") from None
    elif head.get("protection") == "passphrase":
        if passphrase is None:
            raise VaultError("this key backup is protected by a passphrase")
        if set(head) != {"format", "name", "protection", "argon2id", "salt"}:
            raise VaultError("not an envcrypt key backup (unexpected fields)")
        # bounded by the lower cap for files from outside (BACKUP_ARGON2_MAX)
        params = Argon2Params.from_config(head["argon2id"], "the key backup", BACKUP_ARGON2_MAX)
        raw, salt = b64d(sealed), b64d(head["salt"])
        if len(raw) < 12 + 16 or len(salt) < 8:
            raise IntegrityError("the key backup does not open (truncated)")
        try:
            key = params.derive(passphrase, salt)
            plain = AESGCM(key).decrypt(raw[:12], raw[12:], _aad(head))
        except InvalidTag:
            raise IntegrityError("the key backup does not open (wrong passphrase or edited)") from None
    else:
        raise VaultError("unknown key backup protection")
    try:
        payload = json.loads(plain)
    except ValueError:
        raise VaultError("the key backup is corrupt") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("record"), dict) \
            or not isinstance(payload.get("materials"), dict):
        raise VaultError("the key backup is corrupt")
    return name, payload
