"""A vault directory written by an earlier release (tests/vectors/vault_v2, see
tests/make_vault_fixture.py) opens with the current code: its objects decrypt, its
states hold, its audit chain verifies and takes new lines."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import KeyDeletedError, KeyDisabledError
from envcrypt.keys.vault import LocalVault

FIXTURE = Path(__file__).parent / "vectors" / "vault_v2"


@pytest.fixture
def old_vault(tmp_path: Path) -> Path:
    """A private copy (git keeps no 0600/0700 modes; the vault insists on them)."""
    target = tmp_path / "vault"
    shutil.copytree(FIXTURE / "vault", target)
    for root, _dirs, files in os.walk(target):
        os.chmod(root, 0o700)
        for name in files:
            os.chmod(os.path.join(root, name), 0o600)
    return target


def test_old_objects_decrypt_and_states_hold(old_vault: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    for name in ("data.bin", "rsa.bin"):
        blob = (FIXTURE / "blobs" / name).read_bytes()
        got = envcrypt.decrypt(blob, trusted_keys=expected[name]["key_uri"], vault=str(old_vault))
        assert got == expected[name]["plaintext"].encode()
    vault = LocalVault(old_vault)
    sig = expected["signature.hex"]
    assert vault.verify("signer", sig["data"].encode(), bytes.fromhex(sig["signature"])) == "local:signer/1"
    assert [k["name"] for k in vault.list_keys()] == ["data", "signer", "wrap-rsa"]
    assert vault.show_key("data")["current_version"] == 2
    with pytest.raises(KeyDisabledError):
        vault.wrap_key("data/1", os.urandom(32))
    with pytest.raises(KeyDeletedError):
        vault.wrap_key("gone", os.urandom(32))
    with pytest.raises(KeyDeletedError):
        vault.wrap_key("shredded", os.urandom(32))
    assert vault.secrets.get("db-password") == b"hunter2"


def test_old_vault_takes_new_writes_and_its_chain_verifies(old_vault: Path) -> None:
    vault = LocalVault(old_vault)
    assert vault.audit.verify().ok
    before = vault.audit.verify().entries
    blob = envcrypt.encrypt(b"new", "local:data", vault=str(old_vault))
    assert envcrypt.decrypt(blob, trusted_keys="local:data", vault=str(old_vault)) == b"new"
    vault.rotate_key("data")
    assert vault.create_key("shredded") == "local:shredded/2"  # numbers continue after the purge
    report = LocalVault(old_vault).audit.verify()
    assert report.ok, report
    assert report.entries >= before + 4
