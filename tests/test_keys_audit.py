"""The hash-chained audit log: every operation recorded, edits and deletions detected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import KeyDisabledError
from envcrypt.keys.vault import LocalVault

#: the keys this file's envcrypt.decrypt calls accept (a reader names the keys it trusts)
TRUSTED = ["local:eu"]


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    v = LocalVault(_isolated_vault)
    v.create_key("eu")
    blob = envcrypt.encrypt(b"data", "local:eu")
    envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    v.disable_key("eu")
    with pytest.raises(KeyDisabledError):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    return v


def _lines(vault: LocalVault) -> list[str]:
    vault.audit.flush()  # key uses are group-committed (audit_commit.py): on disk within a window
    return (vault.path / "audit.log").read_text().splitlines()


def test_lines_record_who_what_outcome_never_material(vault: LocalVault) -> None:
    entries = [json.loads(line) for line in _lines(vault)]
    assert [(e["op"], e["key"], e["version"], e["outcome"]) for e in entries] == [
        ("vault-init", None, None, "ok"),
        ("create", "eu", None, "ok"),
        ("wrapKey", "eu", 1, "ok"),
        ("unwrapKey", "eu", 1, "ok"),
        ("disable", "eu", None, "ok"),
        ("unwrapKey", "eu", 1, "KeyDisabledError"),
    ]
    assert all({"user", "uid", "host", "pid"} <= set(e["who"]) and e["time"].endswith("Z") for e in entries)
    master = (vault.path / "master.key").read_bytes()
    text = (vault.path / "audit.log").read_bytes()
    assert master.hex().encode() not in text and b"material" not in text
    assert vault.audit.verify().ok and vault.audit.verify().entries == 6


def test_edited_line_detected(vault: LocalVault) -> None:
    lines = _lines(vault)
    lines[2] = lines[2].replace('"outcome":"ok"', '"outcome":"KeyDisabledError"')
    (vault.path / "audit.log").write_text("\n".join(lines) + "\n")
    report = vault.audit.verify()
    assert not report.ok and report.line == 3 and "edited" in (report.problem or "")


def test_deleted_middle_line_detected(vault: LocalVault) -> None:
    lines = _lines(vault)
    del lines[1]
    (vault.path / "audit.log").write_text("\n".join(lines) + "\n")
    report = vault.audit.verify()
    assert not report.ok and report.line == 2


def test_deleted_last_line_detected(vault: LocalVault) -> None:
    lines = _lines(vault)[:-2]
    (vault.path / "audit.log").write_text("\n".join(lines) + "\n")
    report = vault.audit.verify()
    assert not report.ok and "end" in (report.problem or "")


def test_recomputed_plain_hash_is_not_enough(vault: LocalVault) -> None:
    """The chain is keyed (HMAC under the vault), so a forger cannot rebuild it with SHA-256."""
    import hashlib

    entries = [json.loads(line) for line in _lines(vault)]
    prev = "0" * 64
    for e in entries:
        e["prev"] = prev
        body = {k: v for k, v in e.items() if k != "mac"}
        e["mac"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        prev = e["mac"]
    (vault.path / "audit.log").write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert not vault.audit.verify().ok


def test_tail(vault: LocalVault) -> None:
    assert [e["op"] for e in vault.audit.tail(2)] == ["disable", "unwrapKey"]


def test_deleting_log_and_head_is_detected(vault: LocalVault, capsys: pytest.CaptureFixture[str]) -> None:
    vault.audit.flush()  # every line on disk, then the attacker deletes them
    (vault.path / "audit.log").unlink()
    (vault.path / "audit.head").unlink()
    report = LocalVault(vault.path).audit.verify()
    assert not report.ok and "missing" in (report.problem or "")
    from envcrypt.cli import main

    assert main(["audit", "verify", "--vault", str(vault.path)]) == 1
    assert "BROKEN" in capsys.readouterr().out


def test_a_fresh_vault_verifies_and_a_missing_vault_is_empty(tmp_path: Path) -> None:
    fresh = LocalVault(tmp_path / "fresh")
    fresh.list_keys()  # creates the vault (key file mode) and writes vault-init
    assert [e["op"] for e in fresh.audit.entries()] == ["vault-init", "list"]
    assert fresh.audit.verify().ok
    assert LocalVault(tmp_path / "never").audit.verify().ok  # no vault at all: nothing to check


def test_failures_of_any_type_and_invalid_names_are_audited(vault: LocalVault) -> None:
    vault.create_key("eu2")
    with pytest.raises(ValueError):
        vault.rotate_key("../etc")
    with pytest.raises(ValueError):
        envcrypt.encrypt(b"x", "local:bad name")
    with pytest.raises(TypeError):
        vault.show_key(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # KeyUsageError
        vault.encrypt("eu2", "not bytes")  # type: ignore[arg-type]
    tail = vault.audit.tail(4)
    assert [(e["op"], e["outcome"]) for e in tail] == [
        ("rotate", "InvalidKeyUriError"), ("wrapKey", "InvalidKeyUriError"),
        ("show", "error:TypeError"), ("encrypt", "KeyUsageError"),
    ]
    assert tail[0]["key"] == "'../etc'"
    assert vault.audit.verify().ok


def test_reads_are_audited(vault: LocalVault) -> None:
    vault.create_key("signer", "ec-p256")
    vault.list_keys()
    vault.show_key("eu")
    vault.identity("signer", "sign")
    vault.public_key_pem("signer")
    vault.secrets.set("s", b"v")
    vault.secrets.list()
    vault.secrets.versions("s")
    ops = [(e["op"], e["key"], e["outcome"]) for e in vault.audit.tail(7)]
    assert ops == [("list", None, "ok"), ("show", "eu", "ok"), ("identity", "signer", "ok"),
                   ("get-public-key", "signer", "ok"), ("secret-set", "s", "ok"),
                   ("secret-list", None, "ok"), ("secret-versions", "s", "ok")]
