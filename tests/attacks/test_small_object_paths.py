"""A storage writer against the small-object fast paths (issue 13): a body of one chunk opened
in one AEAD call, a read served from the DEK cache, and the vault's memos of references.

The attacker can write any object (format public, forge.py) and copy headers and bodies of
objects a trusted key wrote; none of it may open through a memo or a cached DEK unless the
body is one a trusted key's DEK sealed, with the very salt and commitment it was sealed with.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import envcrypt
from envcrypt.errors import IntegrityError, VaultError, WrongKeyError
from envcrypt.format import KeySlot, parse_header
from envcrypt.keys import vault_files
from envcrypt.keys.cache import DekCache
from envcrypt.keys.vault import LocalVault

from .forge import seal


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    return vault


def test_a_trusted_header_in_front_of_a_forged_small_body_fails_with_a_warm_cache(vault: LocalVault) -> None:
    cache = DekCache()
    blob = envcrypt.encrypt(b"genuine", "local:k")
    assert envcrypt.decrypt(blob, trusted_keys="local:k", dek_cache=cache) == b"genuine"  # DEK now cached
    header, size = parse_header(blob)
    forged = seal(os.urandom(32), header.key_slots, b"forged by the storage writer")
    forged_body = forged[parse_header(forged)[1]:]
    for _ in range(2):  # the cached DEK fails the forged body's commitment, every time
        with pytest.raises(WrongKeyError):
            envcrypt.decrypt(blob[:size] + forged_body, trusted_keys="local:k", dek_cache=cache)


def test_a_small_body_moved_between_two_objects_of_one_cached_dek_fails(vault: LocalVault) -> None:
    """Two objects sealed under one cached DEK (encryption cache on) have their own salts: the
    header of one in front of the body of the other opens only if the bodies are whole."""
    cache = DekCache()
    first = envcrypt.encrypt(b"first object", "local:k", dek_cache=cache)
    second = envcrypt.encrypt(b"second object", "local:k", dek_cache=cache)
    h1, s1 = parse_header(first)
    h2, s2 = parse_header(second)
    assert h1 == h2  # one DEK, the same slot
    spliced = first[:s1 + 56] + second[s2 + 56:]  # first's salt and commitment, second's chunk
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(spliced, trusted_keys="local:k", dek_cache=cache)
    truncated = first[:-1]
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(truncated, trusted_keys="local:k", dek_cache=cache)


def test_a_forged_slot_naming_the_trusted_key_is_refused_and_audited_every_read(vault: LocalVault) -> None:
    real = parse_header(envcrypt.encrypt(b"x", "local:k"))[0].key_slots[0]
    bogus = KeySlot(real.key_uri, real.wrap_algorithm, os.urandom(len(real.wrapped_dek)))
    forged = seal(os.urandom(32), (bogus,), b"forged")
    for _ in range(3):  # nothing about a refused slot is kept: the vault is asked (and audits) each time
        with pytest.raises(WrongKeyError):
            envcrypt.decrypt(forged, trusted_keys="local:k")
    refused = [e for e in vault.audit.entries() if e["op"] == "unwrapKey" and e["outcome"] == "WrongKeyError"]
    assert len(refused) == 3


@pytest.mark.parametrize("target", ["keys/k.json", "index.json"])
def test_a_kept_record_whose_file_turns_unsafe_is_refused(target: str, _isolated_vault: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The mode, type and owner checks are skipped only while a file's stamp equals the one kept
    (which holds the mode and owner that passed them): a file made group-readable, or swapped for
    a symlink to a copy, is checked, and refused, on the next operation."""
    monkeypatch.setattr(vault_files, "RACY_NS", 50_000_000)
    vault = LocalVault(_isolated_vault)
    vault.create_key("k")
    time.sleep(0.1)
    vault.wrap_key("k", os.urandom(32))  # kept from here on
    path = _isolated_vault / target
    os.chmod(path, 0o640)
    with pytest.raises(VaultError, match="permissions"):
        vault.wrap_key("k", os.urandom(32))
    os.chmod(path, 0o600)
    vault.wrap_key("k", os.urandom(32))
    copy = path.with_name("copy.json")
    copy.write_bytes(path.read_bytes())
    os.chmod(copy, 0o600)
    path.unlink()
    path.symlink_to(copy)
    with pytest.raises(VaultError, match="symlink"):
        vault.wrap_key("k", os.urandom(32))
