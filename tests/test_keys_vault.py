"""Local vault: every key state transition and the error it gives."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import (
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyStateError,
    WrongKeyError,
)
from envcrypt.keys.vault import LocalVault

#: the keys this file's envcrypt.decrypt calls accept (a reader names the keys it trusts)
TRUSTED = ["local:a", "local:b", "local:default", "local:eu", "local:k", "local:ro", "local:rsa", "local:us"]


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    return LocalVault(_isolated_vault)


DATA = b"payload " * 100


def test_create_and_roundtrip_names_exact_version(vault: LocalVault) -> None:
    assert vault.create_key("eu") == "local:eu/1"
    blob = envcrypt.encrypt(DATA, "local:eu")
    assert envcrypt.inspect(blob).key_uris == ["local:eu/1"]
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == DATA


def test_create_twice_is_refused(vault: LocalVault) -> None:
    vault.create_key("eu")
    with pytest.raises(KeyStateError):
        vault.create_key("eu")


def test_unknown_key_and_version(vault: LocalVault) -> None:
    with pytest.raises(KeyNotFoundError):
        envcrypt.encrypt(DATA, "local:nope")
    vault.create_key("eu")
    with pytest.raises(KeyNotFoundError):
        envcrypt.encrypt(DATA, "local:eu/2")


def test_rotate_new_writes_use_newest_old_still_open(vault: LocalVault) -> None:
    vault.create_key("eu")
    old = envcrypt.encrypt(DATA, "local:eu")
    assert vault.rotate_key("eu") == "local:eu/2"
    new = envcrypt.encrypt(DATA, "local:eu")
    assert envcrypt.inspect(new).key_uris == ["local:eu/2"]
    assert envcrypt.decrypt(old, trusted_keys=TRUSTED) == envcrypt.decrypt(new, trusted_keys=TRUSTED) == DATA
    assert vault.show_key("eu")["current_version"] == 2


def test_disable_enable_key(vault: LocalVault) -> None:
    vault.create_key("eu")
    blob = envcrypt.encrypt(DATA, "local:eu")
    vault.disable_key("eu")
    with pytest.raises(KeyDisabledError):
        envcrypt.encrypt(DATA, "local:eu")
    with pytest.raises(KeyDisabledError):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    vault.enable_key("eu")
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == DATA


def test_disable_one_version(vault: LocalVault) -> None:
    vault.create_key("eu")
    v1 = envcrypt.encrypt(DATA, "local:eu")
    vault.rotate_key("eu")
    vault.disable_key("eu/2")
    # new writes fall back to the newest *enabled* version
    assert envcrypt.inspect(envcrypt.encrypt(DATA, "local:eu")).key_uris == ["local:eu/1"]
    with pytest.raises(KeyDisabledError):
        envcrypt.encrypt(DATA, "local:eu/2")
    assert envcrypt.decrypt(v1, trusted_keys=TRUSTED) == DATA
    vault.disable_key("eu/1")
    with pytest.raises(KeyDisabledError):
        envcrypt.encrypt(DATA, "local:eu")


def test_not_before_refuses_everything(vault: LocalVault) -> None:
    vault.create_key("eu")
    blob = envcrypt.encrypt(DATA, "local:eu")
    vault.set_validity("eu", not_before=int(time.time()) + 3600)
    with pytest.raises(KeyDisabledError, match="not valid yet"):
        envcrypt.encrypt(DATA, "local:eu")
    with pytest.raises(KeyDisabledError):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)


def test_expired_key_reads_but_does_not_write(vault: LocalVault) -> None:
    vault.create_key("eu")
    blob = envcrypt.encrypt(DATA, "local:eu")
    vault.set_validity("eu", expires=int(time.time()) - 1)
    with pytest.raises(KeyDisabledError, match="expired"):
        envcrypt.encrypt(DATA, "local:eu")
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == DATA
    vault.set_validity("eu", expires=None)
    envcrypt.encrypt(DATA, "local:eu")


def test_soft_delete_recover(vault: LocalVault) -> None:
    vault.create_key("eu")
    blob = envcrypt.encrypt(DATA, "local:eu")
    vault.delete_key("eu")
    with pytest.raises(KeyDeletedError):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    with pytest.raises(KeyDeletedError):
        envcrypt.encrypt(DATA, "local:eu")
    assert [k["name"] for k in vault.list_keys()] == []
    assert [k["name"] for k in vault.list_keys(include_deleted=True)] == ["eu"]
    with pytest.raises(KeyStateError):
        vault.create_key("eu")  # the name is still taken while recoverable
    vault.recover_key("eu")
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == DATA
    with pytest.raises(KeyStateError):
        vault.recover_key("eu")


def test_purge_is_crypto_shredding(vault: LocalVault) -> None:
    vault.create_key("eu")
    vault.rotate_key("eu")
    blob = envcrypt.encrypt(DATA, "local:eu")
    with pytest.raises(KeyStateError):
        vault.purge_key("eu")  # must be soft-deleted first
    vault.delete_key("eu")
    vault.purge_key("eu")
    record = (vault.path / "keys" / "eu.json").read_text()
    assert "material" not in record
    with pytest.raises(KeyDeletedError, match="purged"):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    with pytest.raises(KeyDeletedError):
        vault.recover_key("eu")
    with pytest.raises(KeyDeletedError):
        vault.purge_key("eu")
    # re-creating the name continues the version numbers: old slots still say "purged"
    assert vault.create_key("eu") == "local:eu/3"
    with pytest.raises(KeyDeletedError, match="purged"):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)


def test_permitted_operations(vault: LocalVault) -> None:
    vault.create_key("ro", ops=["unwrapKey"])
    with pytest.raises(KeyAccessDeniedError):
        envcrypt.encrypt(DATA, "local:ro")
    vault.set_ops("ro", ["wrapKey", "unwrapKey"])
    blob = envcrypt.encrypt(DATA, "local:ro")
    vault.set_ops("ro", ["wrapKey"])
    with pytest.raises(KeyAccessDeniedError):
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)
    with pytest.raises(ValueError):
        vault.set_ops("ro", ["sign"])  # AES keys cannot sign


def test_local_default_is_auto_created() -> None:
    blob = envcrypt.encrypt(DATA)
    assert envcrypt.inspect(blob).key_uris == ["local:default/1"]


def test_slot_of_another_key_is_wrong_key(vault: LocalVault) -> None:
    vault.create_key("a")
    vault.create_key("b")
    blob = envcrypt.encrypt(DATA, "local:a")
    slot = envcrypt.inspect(blob).key_slots[0]
    forged = envcrypt.KeySlot("local:b/1", slot.wrap_algorithm, slot.wrapped_dek)
    resolver = envcrypt.keys.base.get_resolver("local")
    with pytest.raises(WrongKeyError):
        resolver.unwrap(forged, {})


def test_several_slots_any_one_opens(vault: LocalVault) -> None:
    vault.create_key("eu")
    vault.create_key("us")
    blob = envcrypt.encrypt(DATA, ["local:eu", "local:us"])
    assert envcrypt.inspect(blob).key_uris == ["local:eu/1", "local:us/1"]
    vault.delete_key("eu")
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == DATA
    vault.disable_key("us")
    with pytest.raises(KeyDeletedError):  # the first slot's error is reported
        envcrypt.decrypt(blob, trusted_keys=TRUSTED)


def test_slot_cap(vault: LocalVault) -> None:
    from envcrypt.errors import InvalidKeyUriError
    from envcrypt.format import MAX_SLOTS

    with pytest.raises(InvalidKeyUriError, match="at most"):
        envcrypt.encrypt(DATA, [f"local:k{i}" for i in range(MAX_SLOTS + 1)])


def test_rsa_key_wraps_deks_with_oaep(vault: LocalVault) -> None:
    from envcrypt.keys.base import WRAP_RSA_OAEP_SHA256

    assert vault.create_key("rsa", "rsa", ops=["wrapKey", "unwrapKey", "encrypt", "decrypt"]) == "local:rsa/1"
    blob = envcrypt.encrypt(DATA, "local:rsa")
    slot = envcrypt.inspect(blob).key_slots[0]
    assert slot.wrap_algorithm == WRAP_RSA_OAEP_SHA256 and len(slot.wrapped_dek) == 384
    assert envcrypt.decrypt(blob, trusted_keys=TRUSTED) == DATA
    assert "BEGIN PUBLIC KEY" in vault.public_key_pem("rsa")


def test_vault_encrypt_decrypt(vault: LocalVault) -> None:
    vault.create_key("eu")
    uri, ct = vault.encrypt("eu", b"secret", b"aad")
    assert uri == "local:eu/1"
    assert vault.decrypt(uri, ct, b"aad") == b"secret"
    with pytest.raises(envcrypt.IntegrityError):
        vault.decrypt(uri, ct, b"other")


def test_repr_and_pickle_carry_no_key(vault: LocalVault) -> None:
    import pickle

    vault.create_key("eu")
    master = (vault.path / "master.key").read_bytes()
    assert master not in pickle.dumps(vault)
    assert master.hex() not in repr(vault)
    clone = pickle.loads(pickle.dumps(vault))
    assert clone.identity("eu") == "local:eu/1"


def test_purge_due_after_retention(vault: LocalVault) -> None:
    vault.create_key("old")
    vault.create_key("recent")
    vault.create_key("live")
    vault.delete_key("old", retention_days=0)
    vault.delete_key("recent", retention_days=7)
    assert vault.purge_due() == ["old"]
    assert not vault.key_exists("old") and vault.key_exists("recent") and vault.key_exists("live")
    assert vault.purge_due(now=int(time.time()) + 8 * 86400) == ["recent"]


def test_threads_share_one_vault_and_keep_the_audit_chain(vault: LocalVault) -> None:
    from concurrent.futures import ThreadPoolExecutor

    vault.create_key("eu")
    with ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(lambda i: envcrypt.encrypt(b"%d" % i, "local:eu"), range(64)))
        plain = list(pool.map(lambda blob: envcrypt.decrypt(blob, trusted_keys=TRUSTED), blobs))
    assert plain == [b"%d" % i for i in range(64)]
    report = vault.audit.verify()
    assert report.ok and report.entries == 1 + 1 + 64 + 64  # vault-init, create, wraps, unwraps
