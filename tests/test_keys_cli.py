"""``envcrypt key|secret|audit`` through the real argument parser."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import envcrypt
from envcrypt.cli import main

#: the keys this file's envcrypt.decrypt calls accept (a reader names the keys it trusts)
TRUSTED = ["local:byo", "local:eu", "local:k", "local:raw"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except ValueError:
        return code, out


def test_key_lifecycle_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "key", "create", "eu", "--json") == (0, {"uri": "local:eu/1"})
    assert run(capsys, "key", "rotate", "eu", "--json") == (0, {"uri": "local:eu/2"})
    code, shown = run(capsys, "key", "show", "eu", "--json")
    assert code == 0 and [v["version"] for v in shown["versions"]] == [1, 2] and "material" not in json.dumps(shown)
    code, listing = run(capsys, "key", "list", "--json")
    assert [k["uri"] for k in listing] == ["local:eu"] and listing[0]["current_version"] == 2
    blob = envcrypt.encrypt(b"x", "local:eu")
    assert run(capsys, "key", "disable", "eu", "--json")[0] == 0
    with pytest.raises(envcrypt.KeyDisabledError):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    assert run(capsys, "key", "enable", "eu")[0] == 0
    assert run(capsys, "key", "delete", "eu", "--json") == (0, {"deleted": "eu"})
    assert run(capsys, "key", "list", "--json") == (0, [])
    assert run(capsys, "key", "recover", "eu")[0] == 0
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == b"x"
    run(capsys, "key", "delete", "eu")
    assert run(capsys, "key", "purge", "eu", "--yes", "--json") == (0, {"purged": "eu"})
    with pytest.raises(envcrypt.KeyDeletedError):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)


def test_errors_exit_2_with_the_error_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "show", "missing"]) == 2
    assert "KeyNotFoundError" in capsys.readouterr().err
    main(["key", "create", "eu"])
    assert main(["key", "purge", "eu", "--yes"]) == 2  # not soft-deleted
    assert "KeyStateError" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["key", "purge", "eu"])  # --yes is required


def test_update_ops_and_validity(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "key", "create", "eu")
    code, shown = run(capsys, "key", "update", "eu", "--ops", "unwrapKey", "--expires", "2001-01-01T00:00:00", "--json")
    assert code == 0 and shown["ops"] == ["unwrapKey"] and shown["expires"] == 978307200
    code, shown = run(capsys, "key", "update", "eu", "--not-before", "1000", "--json")
    assert shown["expires"] == 978307200 and shown["not_before"] == 1000
    code, shown = run(capsys, "key", "update", "eu", "--clear-validity", "--json")
    assert shown["expires"] is None and shown["not_before"] is None


def test_import_byok_backup_restore(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    material = tmp_path / "k.bin"
    material.write_bytes(os.urandom(32))
    assert run(capsys, "key", "import", "raw", "--file", str(material), "--json") == (0, {"uri": "local:raw/1"})
    code, transfer = run(capsys, "key", "transfer-key", "tk", "--json")
    pem = tmp_path / "tk.pem"
    pem.write_text(transfer["public_key"])
    package = tmp_path / "pkg.bin"
    assert run(capsys, "key", "byok-pack", "--public-key", str(pem), "--file", str(material),
               "--out", str(package))[0] == 0
    assert run(capsys, "key", "import", "byo", "--file", str(package), "--byok", "tk", "--json") == (
        0, {"uri": "local:byo/1"})
    blob = envcrypt.encrypt(b"x", "local:byo")
    # both keys hold the same material: a slot made under one unwraps under the other
    raw_slot = envcrypt.inspect(blob).key_slots[0]
    resolver = envcrypt.keys.base.get_resolver("local")
    assert len(resolver.unwrap(envcrypt.KeySlot("local:raw/1", 1, raw_slot.wrapped_dek), {})) == 32

    monkeypatch.setenv("ENVCRYPT_BACKUP_PASSPHRASE", "pw")
    monkeypatch.setattr("envcrypt.keys.byok.ARGON2_DEFAULT", {"memory_cost": 8192, "iterations": 1, "lanes": 1})
    backup = tmp_path / "byo.backup"
    assert run(capsys, "key", "backup", "byo", "--out", str(backup), "--json") == (
        0, {"out": str(backup), "protection": "passphrase"})
    other = tmp_path / "other-vault"
    assert run(capsys, "key", "restore", str(backup), "--vault", str(other), "--json") == (0, {"uri": "local:byo"})
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED, vault=str(other)) == b"x"
    # over a purged key (a tombstone) only with --force
    run(capsys, "key", "delete", "byo", "--vault", str(other))
    run(capsys, "key", "purge", "byo", "--yes", "--vault", str(other))
    assert run(capsys, "key", "restore", str(backup), "--vault", str(other))[0] == 2
    assert run(capsys, "key", "restore", str(backup), "--vault", str(other), "--force", "--json") == (
        0, {"uri": "local:byo"})


def test_rsa_ops_help_and_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["key", "create", "--help"])
    assert "wrapKey,unwrapKey,encrypt,decrypt" in capsys.readouterr().out
    assert main(["key", "create", "mixed", "--kind", "rsa", "--ops", "sign,decrypt"]) == 2
    assert "--ops" in capsys.readouterr().err


def test_sign_verify_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "key", "create", "signer", "--kind", "ec-p256")
    doc = tmp_path / "manifest.json"
    doc.write_text("{}")
    code, signed = run(capsys, "key", "sign", "signer", str(doc), "--json")
    assert code == 0 and signed["key_uri"] == "local:signer/1"
    assert run(capsys, "key", "verify", "signer", str(doc), signed["signature"], "--json") == (
        0, {"valid": True, "key_uri": "local:signer/1"})
    doc.write_text("{ }")
    assert main(["key", "verify", "signer", str(doc), signed["signature"]]) == 2
    assert "InvalidSignatureError" in capsys.readouterr().err


def test_secrets_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    value = tmp_path / "v"
    value.write_text("hunter2")
    assert run(capsys, "secret", "set", "db", "--file", str(value), "--json") == (0, {"name": "db", "version": 1})
    value.write_text("hunter3")
    run(capsys, "secret", "set", "db", "--file", str(value))
    assert run(capsys, "secret", "get", "db", "--json") == (0, {"name": "db", "value": "hunter3"})
    assert run(capsys, "secret", "get", "db", "--version", "1") == (0, "hunter2")
    code, listing = run(capsys, "secret", "list", "--json")
    assert listing[0]["name"] == "db" and listing[0]["versions"] == 2 and "hunter" not in json.dumps(listing)
    assert [v["version"] for v in run(capsys, "secret", "versions", "db", "--json")[1]] == [1, 2]
    assert run(capsys, "secret", "delete", "db", "--json") == (0, {"deleted": "db"})
    assert main(["secret", "get", "db"]) == 2


def test_audit_verify_and_tail(capsys: pytest.CaptureFixture[str], _isolated_vault: Path) -> None:
    run(capsys, "key", "create", "eu")
    envcrypt.decrypt(envcrypt.encrypt(b"x", "local:eu"), trusted_keys=TRUSTED)
    code, report = run(capsys, "audit", "verify", "--json")
    assert code == 0 and report == {"ok": True, "entries": 4, "problem": None, "line": None}  # + vault-init
    code, tail = run(capsys, "audit", "tail", "-n", "2", "--json")
    assert [e["op"] for e in tail] == ["wrapKey", "unwrapKey"]
    log = _isolated_vault / "audit.log"
    log.write_text(log.read_text().replace('"op":"wrapKey"', '"op":"verify"'))
    code, text = run(capsys, "audit", "verify")
    assert code == 1 and "BROKEN at line 3" in text  # line 1 is vault-init


def test_init_passphrase_vault_and_purge_due(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    vault = str(tmp_path / "pv")
    monkeypatch.setenv("MY_PW", "s3cret")
    code, out = run(capsys, "key", "init", "--vault", vault, "--passphrase-env", "MY_PW",
                    "--memory-mib", "8", "--iterations", "1", "--lanes", "1", "--json")
    assert code == 0 and out["master"] == "argon2id passphrase"
    assert main(["key", "create", "k", "--vault", vault]) == 2  # no $ENVCRYPT_VAULT_PASSPHRASE
    assert "passphrase" in capsys.readouterr().err
    monkeypatch.setenv("ENVCRYPT_VAULT_PASSPHRASE", "s3cret")
    assert run(capsys, "key", "create", "k", "--vault", vault, "--json") == (0, {"uri": "local:k/1"})
    run(capsys, "key", "delete", "k", "--vault", vault, "--retention-days", "0")
    assert run(capsys, "key", "purge-due", "--vault", vault, "--json") == (0, {"purged": ["k"]})


def test_backup_output_is_0600_and_never_follows_a_symlink(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    assert main(["key", "create", "k"]) == 0
    out = tmp_path / "k.bak"
    out.write_bytes(b"old")
    out.chmod(0o644)  # an existing world-readable file: its mode must not be kept
    assert main(["key", "backup", "k", "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert json.loads(out.read_bytes())["name"] == "k"
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    victim.chmod(0o644)
    link = tmp_path / "link.bak"
    link.symlink_to(victim)
    assert main(["key", "backup", "k", "--out", str(link)]) == 0
    assert victim.read_bytes() == b"untouched" and victim.stat().st_mode & 0o777 == 0o644
    assert not link.is_symlink() and link.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    capsys.readouterr()
