"""The vault's secrets store."""

from __future__ import annotations

from pathlib import Path

import pytest

from envcrypt.errors import KeyNotFoundError
from envcrypt.keys.vault import LocalVault


def test_secret_lifecycle(_isolated_vault: Path) -> None:
    secrets = LocalVault(_isolated_vault).secrets
    assert secrets.set("db-password", "hunter2") == 1
    assert secrets.set("db-password", b"hunter3") == 2
    assert secrets.get("db-password") == b"hunter3"
    assert secrets.get("db-password", 1) == b"hunter2"
    assert [v["version"] for v in secrets.versions("db-password")] == [1, 2]
    listing = secrets.list()
    assert listing[0]["name"] == "db-password" and listing[0]["versions"] == 2
    assert "hunter" not in repr(listing)
    stored = (_isolated_vault / "secrets" / "db-password.json").read_bytes()
    assert b"hunter" not in stored
    secrets.delete("db-password")
    with pytest.raises(KeyNotFoundError):
        secrets.get("db-password")
    with pytest.raises(KeyNotFoundError):
        secrets.get("nope")
    with pytest.raises(KeyNotFoundError):
        secrets.delete("db-password")


def test_secret_versions_cannot_be_swapped(_isolated_vault: Path) -> None:
    import json

    from envcrypt.errors import VaultError

    vault = LocalVault(_isolated_vault)
    vault.secrets.set("a", "one")
    vault.secrets.set("a", "two")
    path = _isolated_vault / "secrets" / "a.json"
    record = json.loads(path.read_text())
    record["versions"][0]["value"], record["versions"][1]["value"] = (
        record["versions"][1]["value"], record["versions"][0]["value"])
    path.write_text(json.dumps(record))
    with pytest.raises(VaultError):
        vault.secrets.get("a", 1)


def test_secret_ops_are_audited_without_values(_isolated_vault: Path) -> None:
    vault = LocalVault(_isolated_vault)
    vault.secrets.set("token", "s3cr3t-value")
    vault.secrets.get("token")
    vault.audit.flush()
    text = (_isolated_vault / "audit.log").read_text()
    assert "s3cr3t" not in text
    assert [e["op"] for e in vault.audit.tail(5)] == ["vault-init", "secret-set", "secret-get"]
    assert vault.audit.verify().ok


def test_secret_size_and_name_bounds(_isolated_vault: Path) -> None:
    secrets = LocalVault(_isolated_vault).secrets
    with pytest.raises(ValueError):
        secrets.set("big", b"x" * (64 * 1024 + 1))
    with pytest.raises(ValueError):
        secrets.set("../escape", "x")
    with pytest.raises(ValueError):  # "$" in a regex accepts a trailing newline; names are matched whole
        secrets.set("name\n", "x")


def test_key_names_are_matched_whole(_isolated_vault: Path) -> None:
    from envcrypt.errors import InvalidKeyUriError

    vault = LocalVault(_isolated_vault)
    for name in ("abc\n", "abc\n\n", "a/b", "..", ".hidden"):
        with pytest.raises(InvalidKeyUriError):
            vault.create_key(name)
    assert not any("\n" in p.name for p in _isolated_vault.rglob("*"))


def test_edited_copied_or_malformed_secret_records_are_vault_errors(_isolated_vault: Path) -> None:
    import json

    from envcrypt.errors import VaultError

    vault = LocalVault(_isolated_vault)
    vault.secrets.set("a", b"alpha")
    vault.secrets.set("b", b"beta")
    directory = _isolated_vault / "secrets"
    good_b = (directory / "b.json").read_bytes()
    record = json.loads(good_b)
    for bad in ((directory / "a.json").read_bytes(),  # a's record copied over b's
                json.dumps({**record, "versions": record["versions"] * 2}).encode(),  # edited
                json.dumps({"name": "b", "versions": "x"}).encode(), b"{}"):
        (directory / "b.json").write_bytes(bad)
        for call in (lambda: vault.secrets.get("b"), lambda: vault.secrets.list(),
                     lambda: vault.secrets.versions("b"), lambda: vault.secrets.set("b", b"x")):
            with pytest.raises(VaultError):
                call()
    (directory / "b.json").write_bytes(good_b)
    assert vault.secrets.get("b") == b"beta"
