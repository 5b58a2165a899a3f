"""Bad input to the key code gets a typed envcrypt error, never a bare KeyError/TypeError/ValueError."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import envcrypt
from envcrypt import errors
from envcrypt.cli import main
from envcrypt.errors import (
    EnvcryptError,
    InvalidKeyUriError,
    KeyUsageError,
    VaultError,
)
from envcrypt.keys.vault import LocalVault, parse_local_uri

from .vector_files import case_id, load

#: the keys this file's envcrypt.decrypt calls accept (a reader names the keys it trusts)
TRUSTED = ["local:k", "local:t", "local:tenant-b"]


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    v = LocalVault(_isolated_vault)
    v.create_key("k")
    return v


def _rewrite(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))
    path.chmod(0o600)


@pytest.mark.parametrize("case", load("key_uris.json")["invalid"], ids=case_id)
def test_malformed_key_uris_are_typed(vault: LocalVault, case: dict[str, Any]) -> None:
    with pytest.raises(getattr(errors, case["error"])) as info:
        envcrypt.encrypt(b"x", case["uri"])
    assert isinstance(info.value, InvalidKeyUriError)
    assert isinstance(info.value, ValueError)  # existing ``except ValueError`` callers keep working


def test_key_uri_lists_and_types(vault: LocalVault) -> None:
    with pytest.raises(InvalidKeyUriError, match="at least one"):
        envcrypt.encrypt(b"x", [])
    with pytest.raises(InvalidKeyUriError, match="at most 16"):
        envcrypt.encrypt(b"x", [f"local:k{i}" for i in range(17)])
    with pytest.raises(TypeError, match="key_uri is a str"):
        envcrypt.encrypt(b"x", 123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key_uri is a str"):
        envcrypt.encrypt(b"x", [b"local:k"])  # type: ignore[list-item]
    with pytest.raises(InvalidKeyUriError):
        parse_local_uri("aws-kms://alias/x")
    with pytest.raises(InvalidKeyUriError):
        envcrypt.rewrap(envcrypt.encrypt(b"x", "local:k"), [])


def test_vault_crypto_value_errors_are_typed(vault: LocalVault) -> None:
    with pytest.raises(KeyUsageError, match="A256KW"):
        vault.wrap_key("k", b"short", "A256KW")
    with pytest.raises(KeyUsageError):
        vault.wrap_key("k", b"")
    with pytest.raises(KeyUsageError, match="no public key"):
        vault.public_key_pem("k")
    vault.create_key("r", "rsa", ops=["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    with pytest.raises(KeyUsageError, match="at most"):
        vault.encrypt("r", b"x" * 400)
    with pytest.raises(KeyUsageError):
        vault.create_key("z", "des")
    with pytest.raises(KeyUsageError):
        vault.create_key("z", ops=["sign"])
    # the failures are audited with their typed class
    outcomes = [e["outcome"] for e in vault.audit.entries() if e["op"] == "wrapKey"]
    assert outcomes[-2:] == ["KeyUsageError", "KeyUsageError"]


@pytest.mark.parametrize("change", [
    lambda r: {},
    lambda r: {"name": "k"},
    lambda r: {**r, "versions": "x"},
    lambda r: {**r, "ops": None},
    lambda r: {**r, "kind": "des"},
    lambda r: {**r, "versions": [{"version": "1"}]},
    lambda r: {**r, "versions": [{**r["versions"][0], "material": 5}]},
    lambda r: {**r, "enabled": "yes"},
    lambda r: {**r, "expires": "soon"},
])
def test_malformed_key_record_is_a_vault_error(vault: LocalVault, _isolated_vault: Path, change: Any) -> None:
    blob = envcrypt.encrypt(b"x", "local:k")
    path = _isolated_vault / "keys" / "k.json"
    _rewrite(path, change(json.loads(path.read_text())))
    for call in (lambda: envcrypt.decrypt(blob, trusted_keys=TRUSTED), lambda: envcrypt.encrypt(b"x", "local:k"),
                 lambda: vault.show_key("k"), lambda: vault.list_keys(), lambda: vault.rotate_key("k")):
        with pytest.raises(VaultError):
            call()


def test_cli_prints_one_line_for_a_corrupt_record(vault: LocalVault, _isolated_vault: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _rewrite(_isolated_vault / "keys" / "k.json", {"name": "k", "versions": "x"})
    assert main(["key", "show", "k"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("envcrypt: VaultError:") and "Traceback" not in err


@pytest.mark.parametrize("config", [
    {"master": "argon2id", "argon2id": {"memory_cost": 8192}},
    {"master": "argon2id", "argon2id": {"memory_cost": 8192, "iterations": 1, "lanes": 1}},
    {"master": "argon2id", "argon2id": [1]},
    {"master": "argon2id", "argon2id": {"memory_cost": 8192, "iterations": 1, "lanes": 1, "x": 1},
     "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "sealed_master": "AA=="},
    {"master": "argon2id", "argon2id": {"memory_cost": 8192, "iterations": 1, "lanes": 1},
     "salt": 5, "sealed_master": "AA=="},
    {"master": "argon2id", "argon2id": {"memory_cost": 8192, "iterations": 1, "lanes": 1},
     "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "sealed_master": "AA=="},
    {"master": ["keyfile"]},
])
def test_malformed_vault_config_is_a_vault_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 config: dict[str, Any]) -> None:
    directory = tmp_path / "v2"
    directory.mkdir(mode=0o700)
    fd = os.open(directory / "vault.json", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, json.dumps(config).encode())
    os.close(fd)
    monkeypatch.setenv("ENVCRYPT_VAULT_PASSPHRASE", "pw")
    with pytest.raises(VaultError):
        LocalVault(directory).create_key("a")


@pytest.mark.parametrize("blob", [
    b"[1]",
    b"not json",
    b'{"format":"envcrypt-key-backup/1","name":"x","protection":"vault","sealed":5}',
    b'{"format":"envcrypt-key-backup/1","name":"x","protection":"passphrase","sealed":"AA=="}',
    b'{"format":"envcrypt-key-backup/1","name":"x","protection":"passphrase","sealed":"AA==",'
    b'"argon2id":[1],"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}',
    b'{"format":"envcrypt-key-backup/1","name":"x","protection":"passphrase","sealed":"AA==",'
    b'"argon2id":{"memory_cost":8192,"iterations":1,"lanes":1},"salt":7}',
    b'{"format":"envcrypt-key-backup/1","name":"x","protection":"passphrase","sealed":"AA==",'
    b'"argon2id":{"memory_cost":8192,"iterations":1,"lanes":1},"salt":"AAAAAAAAAAAAAAAAAAAAAA=="}',
])
def test_malformed_backup_is_typed(vault: LocalVault, blob: bytes) -> None:
    with pytest.raises(EnvcryptError):
        vault.restore_key(blob, b"pw")


def test_backup_argon2_cap_is_lower_than_the_vault_cap(vault: LocalVault) -> None:
    from envcrypt.keys.vault_store import ARGON2_MAX, BACKUP_ARGON2_MAX

    assert BACKUP_ARGON2_MAX["memory_cost"] == 256 * 1024 < ARGON2_MAX["memory_cost"]
    assert BACKUP_ARGON2_MAX["iterations"] == 8
    head = {"format": "envcrypt-key-backup/1", "name": "x", "protection": "passphrase", "sealed": "AA==",
            "argon2id": {"memory_cost": 512 * 1024, "iterations": 1, "lanes": 1},
            "salt": "AAAAAAAAAAAAAAAAAAAAAA=="}
    with pytest.raises(VaultError, match="memory_cost"):  # refused before any work is done
        vault.restore_key(json.dumps(head).encode(), b"pw")
    head["argon2id"] = {"memory_cost": 8192, "iterations": 9, "lanes": 1}
    with pytest.raises(VaultError, match="iterations"):
        vault.restore_key(json.dumps(head).encode(), b"pw")


def test_key_record_copied_over_another_is_refused(vault: LocalVault, _isolated_vault: Path) -> None:
    vault.create_key("tenant-a")
    vault.create_key("tenant-b")
    blob_b = envcrypt.encrypt(b"B", "local:tenant-b")
    keys = _isolated_vault / "keys"
    (keys / "tenant-b.json").write_bytes((keys / "tenant-a.json").read_bytes())
    for call in (lambda: envcrypt.encrypt(b"x", "local:tenant-b"), lambda: envcrypt.decrypt(blob_b, trusted_keys=TRUSTED),
                 lambda: vault.show_key("tenant-b")):
        with pytest.raises(VaultError, match="names another key"):
            call()
    # relabelled as tenant-b: the MAC (bound to the name) fails
    record = json.loads((keys / "tenant-a.json").read_text())
    _rewrite(keys / "tenant-b.json", {**record, "name": "tenant-b"})
    with pytest.raises(VaultError, match="failed authentication"):
        envcrypt.encrypt(b"x", "local:tenant-b")


@pytest.mark.parametrize("field, value", [
    ("deleted", None), ("ops", ["wrapKey", "unwrapKey", "encrypt", "decrypt"]), ("enabled", False),
    ("expires", None), ("created", 5),
])
def test_edited_key_record_fails_its_mac(vault: LocalVault, _isolated_vault: Path, field: str, value: Any) -> None:
    vault.create_key("t", ops=["wrapKey", "unwrapKey"], expires=2_000_000_000)
    vault.delete_key("t")
    path = _isolated_vault / "keys" / "t.json"
    record = json.loads(path.read_text())
    assert record[field] != value
    _rewrite(path, {**record, field: value})
    with pytest.raises(VaultError, match="failed authentication"):
        envcrypt.encrypt(b"x", "local:t")
    _rewrite(path, record)  # the untouched record still loads
    assert vault.show_key("t")["deleted"]


def test_edited_version_list_fails_its_mac(vault: LocalVault, _isolated_vault: Path) -> None:
    vault.rotate_key("k")
    path = _isolated_vault / "keys" / "k.json"
    record = json.loads(path.read_text())
    _rewrite(path, {**record, "versions": record["versions"][:1]})  # roll back a rotation
    with pytest.raises(VaultError, match="failed authentication"):
        vault.show_key("k")
    _rewrite(path, {k: v for k, v in record.items() if k != "mac"})
    with pytest.raises(VaultError, match="failed authentication"):
        vault.show_key("k")
