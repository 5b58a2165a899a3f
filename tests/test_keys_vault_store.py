"""Vault directory safety, the master key (key file or Argon2id passphrase), concurrency."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import VaultError
from envcrypt.keys.vault import LocalVault

FAST = {"memory_cost": 8 * 1024, "iterations": 1, "lanes": 1}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_first_use_creates_private_key_file(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    assert _mode(_isolated_vault) == 0o700
    assert _mode(_isolated_vault / "master.key") == 0o600
    assert len((_isolated_vault / "master.key").read_bytes()) == 32
    for path in _isolated_vault.rglob("*"):
        assert _mode(path) & 0o077 == 0, path
    raw = (_isolated_vault / "master.key").read_bytes()
    assert raw not in (_isolated_vault / "keys" / "k.json").read_bytes()


def test_insecure_permissions_refused(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    os.chmod(_isolated_vault / "master.key", 0o644)
    with pytest.raises(VaultError, match="insecure"):
        LocalVault(_isolated_vault).encrypt("k", b"x")
    os.chmod(_isolated_vault / "master.key", 0o600)
    os.chmod(_isolated_vault, 0o755)
    with pytest.raises(VaultError, match="insecure"):
        LocalVault(_isolated_vault).encrypt("k", b"x")
    os.chmod(_isolated_vault, 0o700)  # the refusals' queued audit lines can be written again
    LocalVault(_isolated_vault).audit.verify()


def test_symlinks_refused(_isolated_vault: Path, tmp_path: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    target = tmp_path / "elsewhere.json"
    os.replace(_isolated_vault / "keys" / "k.json", target)
    os.symlink(target, _isolated_vault / "keys" / "k.json")
    with pytest.raises(VaultError, match="symlink"):
        vault.identity("k")
    link = tmp_path / "linked-vault"
    os.symlink(_isolated_vault, link)
    with pytest.raises(VaultError, match="symlink"):
        LocalVault(link).create_key("x")


def test_passphrase_vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pv"
    vault = LocalVault(path)
    vault.init("correct horse", **FAST)
    assert not (path / "master.key").exists()
    config = json.loads((path / "vault.json").read_text())
    assert config["master"] == "argon2id" and config["argon2id"] == FAST
    vault.create_key("k")
    monkeypatch.setenv("ENVCRYPT_VAULT_PASSPHRASE", "correct horse")
    blob = envcrypt.encrypt(b"x", "local:k", vault=str(path))
    monkeypatch.delenv("ENVCRYPT_VAULT_PASSPHRASE")
    # a new vault object needs the passphrase from the environment
    with pytest.raises(VaultError, match="passphrase"):
        LocalVault(path).encrypt("k", b"x")
    monkeypatch.setenv("ENVCRYPT_VAULT_PASSPHRASE", "wrong")
    with pytest.raises(VaultError, match="wrong vault passphrase"):
        LocalVault(path).encrypt("k", b"x")
    monkeypatch.setenv("ENVCRYPT_VAULT_PASSPHRASE", "correct horse")
    envcrypt.keys.base.clear_resolver_cache()
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED, vault=str(path)) == b"x"


def test_argon2_parameters_above_cap_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(VaultError, match="outside the allowed range"):
        LocalVault(tmp_path / "a").init("pw", memory_cost=4 * 1024 * 1024, iterations=1, lanes=1)
    path = tmp_path / "b"
    LocalVault(path).init("pw", **FAST)
    config = json.loads((path / "vault.json").read_text())
    config["argon2id"]["memory_cost"] = 64 * 1024 * 1024  # a planted, hostile setting
    (path / "vault.json").write_text(json.dumps(config))
    monkeypatch.setenv("ENVCRYPT_VAULT_PASSPHRASE", "pw")
    with pytest.raises(VaultError, match="outside the allowed range"):
        LocalVault(path).create_key("k")


def test_corrupt_master_key_file(_isolated_vault: Path) -> None:
    LocalVault(_isolated_vault).create_key("k")
    (_isolated_vault / "master.key").write_bytes(b"short")
    with pytest.raises(VaultError):
        LocalVault(_isolated_vault).encrypt("k", b"x")


_WORKER = """
import sys
from envcrypt.keys.vault import LocalVault
v = LocalVault(sys.argv[1])
for _ in range(int(sys.argv[2])):
    v.rotate_key("shared")
"""

#: the keys this file's envcrypt.decrypt calls accept (a reader names the keys it trusts)
TRUSTED = ["local:k"]


def test_concurrent_processes_do_not_lose_updates(_isolated_vault: Path) -> None:
    LocalVault(_isolated_vault).create_key("shared")
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(_isolated_vault), "10"]) for _ in range(3)]
    assert all(p.wait(60) == 0 for p in procs)
    vault = LocalVault(_isolated_vault)
    versions = [v["version"] for v in vault.show_key("shared")["versions"]]
    assert versions == list(range(1, 32))
    assert vault.audit.verify().ok
    assert vault.audit.verify().entries == 33  # vault-init, 1 create, 30 rotates, 1 show
