"""Rewrap: new key slots and the same body within a key (rotation); a fresh DEK for another key."""

from __future__ import annotations

from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import (
    IntegrityError,
    KeyAccessDeniedError,
    KeyDeletedError,
    UntrustedKeyError,
    WrongKeyError,
)
from envcrypt.format import parse_header
from envcrypt.keys.vault import LocalVault
from envcrypt.rewrap import rewrap_header

DATA = bytes(range(256)) * 300  # several chunks


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    v = LocalVault(_isolated_vault)
    v.create_key("old")
    v.create_key("new")
    v.create_key("dr")
    return v


def _body(blob: bytes) -> bytes:
    return blob[parse_header(blob)[1]:]


def test_rewrap_to_another_key_reencrypts_under_a_fresh_dek(vault: LocalVault) -> None:
    blob = envcrypt.encrypt(DATA, "local:old", encryption_context={"t": "1"})
    with pytest.raises(UntrustedKeyError):  # the old key must be named: rewrap trusts the new keys by default
        envcrypt.rewrap(blob, ["local:new", "local:dr"])
    out = envcrypt.rewrap(blob, ["local:new", "local:dr"], trusted_keys=["local:old"])
    assert _body(out)[:56] != _body(blob)[:56]  # new salt and commitment: another DEK
    assert envcrypt.inspect(out).key_uris == ["local:new/1", "local:dr/1"]
    assert envcrypt.inspect(out).encryption_context == {"t": "1"}
    vault.delete_key("old")
    vault.purge_key("old")
    with pytest.raises(KeyDeletedError):
        envcrypt.decrypt(blob, trusted_keys=["local:old"])
    assert envcrypt.decrypt(out, trusted_keys=["local:new"]) == DATA
    assert envcrypt.decrypt(out, trusted_keys=["local:dr"]) == DATA


def test_rewrap_within_the_keys_an_object_has_keeps_the_body(vault: LocalVault) -> None:
    blob = envcrypt.encrypt(DATA, ["local:old", "local:dr"])
    out = envcrypt.rewrap(blob, "local:dr", trusted_keys=["local:old", "local:dr"])  # drop a slot
    assert _body(out) == _body(blob)
    assert envcrypt.inspect(out).key_uris == ["local:dr/1"]


def test_rewrap_after_rotation_uses_newest_version(vault: LocalVault) -> None:
    blob = envcrypt.encrypt(DATA, "local:old")
    vault.rotate_key("old")
    out = envcrypt.rewrap(blob, "local:old")
    assert envcrypt.inspect(out).key_uris == ["local:old/2"]
    assert _body(out) == _body(blob)
    vault.disable_key("old/1")
    assert envcrypt.decrypt(out, trusted_keys="local:old") == DATA


def test_rewrap_header_alone(vault: LocalVault) -> None:
    blob = envcrypt.encrypt(DATA, "local:old")
    vault.rotate_key("old")
    header, size = parse_header(blob)
    # from a Header object with an explicit body prefix
    head = rewrap_header(header, "local:old", body_prefix=blob[size:size + 56])
    assert envcrypt.decrypt(head + blob[size:], trusted_keys="local:old") == DATA
    # from the leading bytes (the prefix is taken from them)
    head2 = rewrap_header(blob[:size + 56], "local:old")
    assert envcrypt.inspect(head2 + blob[size:]).key_uris == ["local:old/2"]
    # a header alone cannot move the DEK to another key: only a re-encryption can
    with pytest.raises(KeyAccessDeniedError, match="re-encrypt"):
        rewrap_header(header, "local:new", body_prefix=blob[size:size + 56], trusted_keys=["local:old"])


def test_rewrap_checks_the_key_commitment(vault: LocalVault) -> None:
    a = envcrypt.encrypt(DATA, "local:old")
    b = envcrypt.encrypt(DATA, "local:old")
    header_a, size_a = parse_header(a)
    header_b, size_b = parse_header(b)
    # b's header with a's slot: the slot unwraps, but to a DEK that fails b's commitment
    spliced = header_b.with_slots(header_a.key_slots).pack() + b[size_b:]
    with pytest.raises(WrongKeyError, match="commitment"):
        envcrypt.rewrap(spliced, "local:old")
    # without a body prefix nothing is rewrapped, even when the slots agree
    two = header_b.with_slots(header_a.key_slots + header_b.key_slots)
    with pytest.raises(TypeError, match="body_prefix"):
        rewrap_header(two, "local:new")
    with pytest.raises(TypeError, match="body_prefix"):
        rewrap_header(header_b.with_slots(header_a.key_slots), "local:new")
    with pytest.raises(TypeError, match="body_prefix"):
        rewrap_header(header_b.pack(), "local:new")
    # with the prefix, the committed DEK is found in the second slot
    fixed = rewrap_header(two, "local:old", body_prefix=b[size_b:size_b + 56])
    assert envcrypt.decrypt(fixed + b[size_b:], trusted_keys="local:old") == DATA


def test_rewrap_without_access_fails_and_short_input(vault: LocalVault) -> None:
    blob = envcrypt.encrypt(DATA, "local:old")
    vault.disable_key("old")
    with pytest.raises(envcrypt.KeyDisabledError):
        envcrypt.rewrap(blob, "local:new", trusted_keys="local:old")
    with pytest.raises(IntegrityError):
        envcrypt.rewrap(blob[: parse_header(blob)[1] + 10], "local:new", trusted_keys="local:old")


def test_rewrap_header_refuses_a_foreign_slot(vault: LocalVault) -> None:
    """A Header whose only slot comes from another object: its DEK opens, but fails the
    body's commitment, so nothing is wrapped under the new key."""
    a = envcrypt.encrypt(DATA, "local:old")
    b = envcrypt.encrypt(DATA, "local:old")
    header_a, _ = parse_header(a)
    header_b, size_b = parse_header(b)
    spliced = header_b.with_slots(header_a.key_slots)
    before = [e for e in vault.audit.entries() if e["op"] == "wrapKey"]
    with pytest.raises(WrongKeyError, match="commitment"):
        rewrap_header(spliced, "local:old", body_prefix=b[size_b:size_b + 56])
    after = [e for e in vault.audit.entries() if e["op"] == "wrapKey"]
    assert after == before  # nothing was wrapped again
    # a truncated body prefix is refused too
    with pytest.raises(IntegrityError):
        rewrap_header(header_b, "local:old", body_prefix=b[size_b:size_b + 10])


@pytest.mark.cloud
def test_rewrap_local_to_kms(vault: LocalVault, moto_server: str) -> None:
    boto3 = pytest.importorskip("boto3")
    kms = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    opts = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    blob = envcrypt.encrypt(DATA, "local:old", encryption_context={"t": "1"})
    out = envcrypt.rewrap(blob, f"aws-kms://{arn}", trusted_keys="local:old", **opts)
    assert _body(out)[:56] != _body(blob)[:56]  # re-encrypted: KMS never receives local:old's DEK
    assert envcrypt.inspect(out).key_uris == [f"aws-kms://{arn}"]
    vault.delete_key("old")
    assert envcrypt.decrypt(out, trusted_keys=f"aws-kms://{arn}", **opts) == DATA
