"""Attacks on the vault's master-key mode and configuration by someone who can write the
vault directory but holds neither the master key nor the passphrase.

Each test builds the hostile state with file writes only (its own vault.json and
master.key, edited fields) and checks that the vault refuses it before anything is
sealed under a master key that is not the owner's.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import envcrypt
from envcrypt.errors import VaultError
from envcrypt.keys.base import clear_resolver_cache
from envcrypt.keys.vault import LocalVault

FAST = {"memory_cost": 8 * 1024, "iterations": 1, "lanes": 1}


# The vault's MACs, computed from the documented format (vault_store.py) with `cryptography`
# alone, as an attacker who knows the format (and, for the old-vault fixture, the owner) would.

def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, info).derive(master)


def _hmac(key: bytes, data: bytes) -> str:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize().hex()


def _config_mac(master: bytes, config: dict[str, Any]) -> str:
    body = {k: v for k, v in config.items() if k != "mac"}
    return _hmac(_derive(master, b"envcrypt vault config mac"), b"envcrypt vault config\0" + _canonical(body))


def _audit_mac(master: bytes, line: dict[str, Any]) -> str:
    return _hmac(_derive(master, b"envcrypt vault audit chain"), _canonical(line))


def _record_mac(master: bytes, label: str, record: dict[str, Any]) -> str:
    return _hmac(_derive(master, b"envcrypt vault record mac"), label.encode() + b"\0" + _canonical(record))


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _attacker_keyfile_vault(path: Path, *, with_mac: bool = True) -> None:
    """Replace vault.json and master.key with a key-file config for a master key the attacker made
    (a valid format-2 config with its own mac, or a format-1 config without one)."""
    master = os.urandom(32)
    _write(path / "master.key", master)
    config: dict[str, Any] = {"format": 2 if with_mac else 1, "master": "keyfile"}
    if with_mac:
        config["mac"] = _config_mac(master, config)
    _write(path / "vault.json", json.dumps(config).encode())


def _records(path: Path) -> set[str]:
    return {p.name for p in (path / "keys").glob("*.json")}


@pytest.mark.parametrize("with_mac", [True, False])
def test_passphrase_vault_switched_to_keyfile_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        with_mac: bool) -> None:
    path = tmp_path / "pv"
    owner = LocalVault(path, passphrase="owner passphrase")
    owner.init("owner passphrase", **FAST)
    owner.create_key("k")
    before = _records(path)
    _attacker_keyfile_vault(path, with_mac=with_mac)
    # the owner opens the vault with the passphrase: refused, not silently ignored
    with pytest.raises(VaultError):
        LocalVault(path, passphrase="owner passphrase").create_key("new")
    monkeypatch.setenv("ENVCRYPT_VAULT_PASSPHRASE", "owner passphrase")
    with pytest.raises(VaultError):
        envcrypt.encrypt(b"x", "local:k", vault=str(path))
    monkeypatch.delenv("ENVCRYPT_VAULT_PASSPHRASE")
    clear_resolver_cache()
    # without any passphrase either: the attacker's master key does not authenticate the vault
    with pytest.raises(VaultError):
        LocalVault(path).create_key("new")
    with pytest.raises(VaultError):
        LocalVault(path).secrets.set("token", b"v")
    assert _records(path) == before  # nothing was sealed under the attacker's master key
    assert not (path / "secrets").exists() or not any((path / "secrets").glob("*.json"))


@pytest.mark.parametrize("with_mac", [True, False])
def test_keyfile_vault_with_replaced_master_key_is_refused(_isolated_vault: Path, with_mac: bool) -> None:
    path = _isolated_vault
    LocalVault(path).create_key("k")
    before = _records(path)
    _attacker_keyfile_vault(path, with_mac=with_mac)
    with pytest.raises(VaultError):
        envcrypt.encrypt(b"x", "local:k", vault=str(path))
    with pytest.raises(VaultError):
        LocalVault(path).create_key("new")
    assert _records(path) == before


def test_keyfile_vault_with_only_master_key_replaced_is_refused(_isolated_vault: Path) -> None:
    path = _isolated_vault
    LocalVault(path).create_key("k")
    _write(path / "master.key", os.urandom(32))
    with pytest.raises(VaultError):
        LocalVault(path).create_key("new")
    assert _records(path) == {"k.json"}


def _edit_config(path: Path, change: Any) -> None:
    config = json.loads((path / "vault.json").read_text())
    change(config)
    _write(path / "vault.json", json.dumps(config).encode())


@pytest.mark.parametrize("edit", [
    lambda c: c.update(format=3),
    lambda c: c.update(format=1),  # an older format, mac kept
    lambda c: c.update(comment="planted"),
    lambda c: c.update(argon2id=FAST),  # a passphrase field planted into a key-file config
    lambda c: (c.pop("mac", None), c.update(format=1)),  # a downgrade to the unauthenticated format
    lambda c: c.pop("mac", None),
])
def test_edited_keyfile_config_is_refused(_isolated_vault: Path, edit: Any) -> None:
    LocalVault(_isolated_vault).create_key("k")
    _edit_config(_isolated_vault, edit)
    with pytest.raises(VaultError):
        LocalVault(_isolated_vault).create_key("new")


@pytest.mark.parametrize("edit", [
    lambda c: c["argon2id"].update(iterations=2),
    lambda c: c.update(format=1),
    lambda c: c.update(hint="planted"),
    lambda c: (c.pop("mac", None), c.update(format=1)),
])
def test_edited_passphrase_config_is_refused(tmp_path: Path, edit: Any) -> None:
    path = tmp_path / "pv"
    LocalVault(path).init("pw", **FAST)
    LocalVault(path, passphrase="pw").create_key("k")
    _edit_config(path, edit)
    with pytest.raises(VaultError):
        LocalVault(path, passphrase="pw").create_key("new")
    assert _records(path) == {"k.json"}


# ------------------------------------------------------------------ a vault made by the previous release


def _old_vault(path: Path) -> bytes:
    """Write a vault exactly as the previous release left it: vault.json format 1 without a mac,
    a vault-init genesis line without a format, one key record without a generation, no index.
    Returns the master key."""
    path.mkdir(mode=0o700)
    (path / "keys").mkdir(mode=0o700)
    master = os.urandom(32)
    _write(path / "master.key", master)
    _write(path / "vault.json", json.dumps({"format": 1, "master": "keyfile"}).encode())
    line: dict[str, Any] = {"seq": 1, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "who": {"user": "u", "uid": os.getuid(), "host": "h", "pid": 1},
                            "op": "vault-init", "key": None, "version": None, "outcome": "ok",
                            "prev": "0" * 64, "master": "keyfile"}
    line["mac"] = _audit_mac(master, line)
    _write(path / "audit.log", _canonical(line) + b"\n")
    _write(path / "audit.head", "{:020d} {}\n".format(1, line["mac"]).encode())
    material = os.urandom(32)
    nonce = os.urandom(12)
    sealed = base64.b64encode(nonce + AESGCM(master).encrypt(nonce, material, b"key:old/1")).decode()
    record: dict[str, Any] = {
        "name": "old", "kind": "aes256", "ops": ["decrypt", "encrypt", "unwrapKey", "wrapKey"],
        "enabled": True, "created": 1, "not_before": None, "expires": None, "deleted": None,
        "scheduled_purge": None, "purged": None, "transfer": False, "purged_through": 0,
        "versions": [{"version": 1, "created": 1, "enabled": True, "origin": "generated",
                      "material": sealed, "public": None}],
    }
    record["mac"] = _record_mac(master, "key:old", record)
    _write(path / "keys" / "old.json", json.dumps(record).encode())
    return master


def test_old_vault_keeps_working_and_is_upgraded_once(tmp_path: Path) -> None:
    path = tmp_path / "old"
    _old_vault(path)
    vault = LocalVault(path)
    uri, ct = vault.encrypt("old", b"still readable")
    assert vault.decrypt(uri, ct) == b"still readable"
    config = json.loads((path / "vault.json").read_text())
    assert config["format"] == 2 and "mac" in config
    assert (path / "index.json").exists()
    LocalVault(path).disable_key("old")  # a second object: no second upgrade
    ops = [e["op"] for e in vault.audit.entries()]
    assert ops.count("vault-upgrade") == 1
    assert vault.audit.verify().ok


def test_mac_stripped_from_an_upgraded_vault_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old"
    _old_vault(path)
    LocalVault(path).create_key("new")  # upgrades
    _edit_config(path, lambda c: (c.pop("mac", None), c.update(format=1)))
    with pytest.raises(VaultError, match="downgrade"):
        LocalVault(path).create_key("newer")
