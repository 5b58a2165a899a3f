"""Rollback attacks: an older copy of a record file (or of a record and the index together)
put back into the vault directory to undo a disable, a delete, a purge or a secret's deletion.

A record carries a generation that the MACed index (index.json) holds for it: a replayed
older record is refused with VaultError naming the key, and a record rolled back together
with the index is reported by ``audit verify`` (mutating audit lines carry the generation).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import KeyDeletedError, KeyStateError, VaultError
from envcrypt.keys.base import clear_resolver_cache
from envcrypt.keys.vault import LocalVault, LocalVaultResolver


@pytest.fixture(autouse=True)
def _key_k_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """local:k is the default (and so the trusted) key of envcrypt.encrypt/decrypt here."""
    monkeypatch.setenv("ENVCRYPT_KEY_URI", "local:k")


def _put_back(path: Path, data: bytes) -> None:
    """Write an old copy back as an attacker with write access would (mode 0600, owner's uid)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _snapshot(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def test_replayed_record_does_not_undo_a_disable(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    blob = envcrypt.encrypt(b"data", "local:k")
    record = _isolated_vault / "keys" / "k.json"
    enabled_copy = record.read_bytes()
    vault.disable_key("k")
    _put_back(record, enabled_copy)
    clear_resolver_cache()
    for use in (lambda: vault.encrypt("k", b"x"), lambda: LocalVault(_isolated_vault).wrap_key("k", os.urandom(32)),
                lambda: envcrypt.encrypt(b"x", "local:k"), lambda: envcrypt.decrypt(blob)):
        with pytest.raises(VaultError, match="local:k|key:k"):
            use()


def test_replayed_record_does_not_undo_a_version_disable(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    record = _isolated_vault / "keys" / "k.json"
    copy = record.read_bytes()
    vault.rotate_key("k")
    vault.disable_key("k/1")
    _put_back(record, copy)
    with pytest.raises(VaultError, match="key:k"):
        vault.encrypt("k/1", b"x")


def test_replayed_pre_purge_record_never_unwraps(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    blob = envcrypt.encrypt(b"shredded", "local:k")
    record = _isolated_vault / "keys" / "k.json"
    live_copy = record.read_bytes()
    vault.delete_key("k")
    deleted_copy = record.read_bytes()
    vault.purge_key("k")
    for copy in (live_copy, deleted_copy):
        _put_back(record, copy)
        clear_resolver_cache()
        with pytest.raises((KeyDeletedError, VaultError)):
            envcrypt.decrypt(blob)
        slot = envcrypt.inspect(blob).key_slots[0]
        with pytest.raises((KeyDeletedError, VaultError)):
            LocalVaultResolver(LocalVault(_isolated_vault)).unwrap(slot, {})
        with pytest.raises((KeyDeletedError, VaultError)):
            vault.recover_key("k")


def test_record_and_index_replayed_together_fail_audit_verify(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    vault.create_key("other")
    record, index = _isolated_vault / "keys" / "k.json", _isolated_vault / "index.json"
    record_copy, index_copy = record.read_bytes(), _snapshot(index)
    vault.disable_key("k")
    assert vault.audit.verify().ok
    _put_back(record, record_copy)
    if index_copy is not None:
        _put_back(index, index_copy)
    report = LocalVault(_isolated_vault).audit.verify()
    assert not report.ok
    assert "k" in (report.problem or "")


def test_index_deleted_is_refused(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    record = _isolated_vault / "keys" / "k.json"
    copy = record.read_bytes()
    vault.disable_key("k")
    _put_back(record, copy)
    (_isolated_vault / "index.json").unlink(missing_ok=True)
    with pytest.raises(VaultError):
        LocalVault(_isolated_vault).encrypt("k", b"x")
    with pytest.raises(VaultError):
        vault.encrypt("k", b"x")


def test_replayed_secret_record_is_refused(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.secrets.set("token", b"old value")
    record = _isolated_vault / "secrets" / "token.json"
    old_copy = record.read_bytes()
    vault.secrets.set("token", b"rotated")
    _put_back(record, old_copy)  # the version list before the rotation
    with pytest.raises(VaultError, match="token"):
        vault.secrets.get("token")
    vault.secrets.set("gone", b"deleted value")
    gone_copy = (_isolated_vault / "secrets" / "gone.json").read_bytes()
    vault.secrets.delete("gone")
    _put_back(_isolated_vault / "secrets" / "gone.json", gone_copy)
    with pytest.raises(VaultError, match="gone"):
        LocalVault(_isolated_vault).secrets.get("gone")


def test_backup_restored_over_a_purged_key_needs_force(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    blob = envcrypt.encrypt(b"data", "local:k")
    backup = vault.backup_key("k")
    vault.delete_key("k")
    vault.purge_key("k")
    with pytest.raises(KeyStateError, match="force"):
        vault.restore_key(backup)
    with pytest.raises(KeyDeletedError):
        envcrypt.decrypt(blob)
    assert vault.restore_key(backup, force=True) == "local:k"
    assert envcrypt.decrypt(blob) == b"data"
