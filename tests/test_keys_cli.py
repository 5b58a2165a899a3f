"""``envcrypt key|secret|audit`` through the real argument parser."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import envcrypt
from envcrypt.cli import main
from envcrypt.keys.base import clear_resolver_cache
from envcrypt.keys.vault import LocalVault

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


def test_errors_exit_2_with_the_error_name(capsys: pytest.CaptureFixture[str], _isolated_vault: Path) -> None:
    main(["key", "create", "eu"])
    assert main(["key", "show", "missing"]) == 2
    assert f"KeyNotFoundError: no key local:missing in the vault at {_isolated_vault}" in capsys.readouterr().err
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


# ---------------------------------------------------------------- vault paths (issue 8, item 7)


def test_reads_never_create_a_vault_and_name_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data.csv").write_bytes(b"a,b\n")
    assert main(["encrypt", str(tmp_path / "data.csv"), str(tmp_path / "data.csv.envc")]) == 0
    assert main(["put", str(tmp_path / "data.csv"), f"{tmp_path}/store/data.csv"]) == 0
    typo = tmp_path / "vualt"
    monkeypatch.setenv("ENVCRYPT_VAULT", str(typo))
    clear_resolver_cache()  # as a new process would (resolvers are cached by their options)
    failing = (["decrypt", str(tmp_path / "data.csv.envc"), str(tmp_path / "out")],
               ["cat", f"{tmp_path}/store/data.csv"], ["key", "list"], ["key", "show", "default"],
               ["secret", "list"], ["get", f"{tmp_path}/store/data.csv", str(tmp_path / "out")])
    for argv in failing:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"no vault at {typo}" in err and "envcrypt vault init" in err, argv
        assert not typo.exists(), argv
    for argv in (["ls", f"{tmp_path}/store"], ["inspect", f"{tmp_path}/store/data.csv"]):
        assert main(argv) == 0 and not typo.exists()
    assert not (tmp_path / "out").exists()
    # a write under a named key does not create one either; the default key's first write does
    assert main(["encrypt", str(tmp_path / "data.csv"), str(tmp_path / "x.envc"), "--key", "local:sales"]) == 2
    assert f"no key local:sales: no vault at {typo}" in capsys.readouterr().err and not typo.exists()
    assert main(["encrypt", str(tmp_path / "data.csv"), str(tmp_path / "x.envc")]) == 0
    assert (typo / "vault.json").exists()


def test_vault_init_and_vault_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    where = tmp_path / "v1"
    assert run(capsys, "vault", "path", "--vault", str(where), "--json") == (0, {"vault": str(where), "exists": False})
    assert run(capsys, "vault", "init", "--vault", str(where), "--json") == (
        0, {"vault": str(where), "master": "key file"})
    assert run(capsys, "vault", "path", "--vault", str(where), "--json")[1]["exists"] is True
    assert main(["vault", "init", "--vault", str(where)]) == 2  # never over an existing vault
    assert "already initialised" in capsys.readouterr().err
    secret = tmp_path / "v2"
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    assert run(capsys, "vault", "init", "--vault", str(secret), "--passphrase-stdin", "--memory-mib", "8",
               "--iterations", "1", "--lanes", "1", "--json")[1]["master"] == "argon2id passphrase"
    assert main(["key", "list", "--vault", str(secret)]) == 2  # no passphrase given
    monkeypatch.setenv("ENVCRYPT_VAULT_PASSPHRASE", "correct horse")
    assert run(capsys, "key", "list", "--vault", str(secret), "--json") == (0, [])


def test_file_commands_take_vault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--vault DIR`` on file commands sets the local resolver's vault, as on key commands."""
    other = tmp_path / "other-vault"
    assert main(["key", "create", "team", "--vault", str(other)]) == 0
    (tmp_path / "a.txt").write_bytes(b"team data")
    assert main(["encrypt", str(tmp_path / "a.txt"), str(tmp_path / "a.envc"), "--key", "local:team",
                 "--vault", str(other)]) == 0
    assert main(["decrypt", str(tmp_path / "a.envc"), str(tmp_path / "a.out"), "--trust", "local:team"]) == 2
    capsys.readouterr()
    assert main(["decrypt", str(tmp_path / "a.envc"), str(tmp_path / "a.out"), "--trust", "local:team",
                 "--vault", str(other)]) == 0
    assert (tmp_path / "a.out").read_bytes() == b"team data"
    assert main(["put", str(tmp_path / "a.txt"), f"{tmp_path}/s/a.txt", "--key", "local:team",
                 "--vault", str(other)]) == 0
    capsys.readouterr()
    assert main(["cat", f"{tmp_path}/s/a.txt", "--trust", "local:team", "--vault", str(other)]) == 0
    assert capsys.readouterr().out == "team data"


def test_python_encrypt_on_a_fresh_machine_still_creates_the_default_key(_isolated_vault: Path) -> None:
    assert not _isolated_vault.exists()
    blob = envcrypt.encrypt(b"first")
    assert envcrypt.inspect(blob).key_uris == ["local:default/1"] and (_isolated_vault / "vault.json").exists()
    assert envcrypt.decrypt(blob) == b"first"


def test_key_show_and_secret_list_are_readable_tables(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    main(["key", "create", "eu"])
    main(["key", "rotate", "eu"])
    capsys.readouterr()
    assert main(["key", "show", "eu"]) == 0
    out = capsys.readouterr().out
    created = LocalVault().show_key("eu")["created"]
    iso = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    assert f"created          {iso}" in out
    assert "ops              decrypt,encrypt,unwrapKey,wrapKey" in out
    assert "VERSION  CREATED" in out and "{" not in out and str(created) not in out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hunter2")))
    assert main(["secret", "set", "db"]) == 0
    capsys.readouterr()
    assert main(["secret", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSIONS", "UPDATED"] and lines[1].split()[:2] == ["db", "1"]
    assert lines[1].split()[2].endswith("Z")
    assert run(capsys, "secret", "list", "--json")[1][0]["updated"] > 1_000_000_000  # machine fields stay


def test_a_key_that_lacks_an_operation_says_which_kind_or_ops_would_allow_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["signer", "--kind", "ec-p256"], ["aes"], ["ro", "--ops", "unwrapKey"]):
        assert main(["key", "create", *argv]) == 0
    (tmp_path / "x").write_bytes(b"x")
    expected = {
        "signer": "wrapping data keys needs an aes256 key: envcrypt key create NAME",
        "ro": "allow it with: envcrypt key update ro --ops unwrapKey,wrapKey",
    }
    for key, hint in expected.items():
        assert main(["encrypt", str(tmp_path / "x"), str(tmp_path / "x.envc"), "--key", f"local:{key}"]) == 2
        err = capsys.readouterr().err
        assert f"KeyAccessDeniedError: {tmp_path / 'x'}: local:{key} does not permit wrapKey" in err and hint in err
    assert main(["manifest", "sign", str(tmp_path), "--key", "local:aes"]) == 2
    assert "signing needs a signing key: envcrypt key create NAME --kind ec-p256" in capsys.readouterr().err
