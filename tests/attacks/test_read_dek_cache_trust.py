"""Issue 13: the read-side DEK cache never lets a cached DEK bypass ``trusted_keys``.

One process reads both tenants of a lake (a key policy: ``tenants/a`` trusts only
``local:tenant-a``, ``tenants/b`` only ``local:tenant-b``).  Tenant b's object has
just been read, so its DEK (and the opened object: header bytes -> chunk cipher) is
cached.  A storage writer copies b's slot (or the whole object) into tenant a's
prefix, relabels the slot, or puts it beside one of a's slots.  Every such read must
fail as it would with a cold cache, and return no plaintext: a cache hit needs the
slot's key to be trusted by *this* read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import envcrypt
from envcrypt.errors import EnvcryptError, UntrustedKeyError
from envcrypt.format import KeySlot, parse_header
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.cache import default_cache
from envcrypt.keys.vault import LocalVault

SECRET = os.urandom(50_000)


@pytest.fixture
def lake(_isolated_vault: Path, tmp_path: Path, unwraps: list[str]) -> dict[str, Any]:
    default_cache().clear()
    vault = LocalVault(_isolated_vault)
    vault.create_key("tenant-a")
    vault.create_key("tenant-b")
    root = tmp_path / "lake"
    for t in ("a", "b"):
        (root / "tenants" / t).mkdir(parents=True)
    policy = {f"{root}/tenants/a/": "local:tenant-a", f"{root}/tenants/b/": "local:tenant-b"}
    fs = EnvcryptFileSystem(target_protocol="file", key_policy=policy, skip_instance_cache=True)
    fs.pipe_file(f"{root}/tenants/b/secret.bin", SECRET)
    fs.pipe_file(f"{root}/tenants/a/own.bin", b"tenant a's own data")
    calls = unwraps
    # tenant b's reader: the DEK and the opened object are now cached in this process
    for _ in range(2):
        assert fs.cat_file(f"{root}/tenants/b/secret.bin") == SECRET
        assert fs.cat_file(f"{root}/tenants/b/secret.bin", 10, 20) == SECRET[10:20]
    assert calls == ["local:tenant-b/1"]
    yield {"fs": fs, "root": root, "calls": calls}
    default_cache().clear()


def _stored(lake: dict[str, Any], rel: str) -> bytes:
    return (lake["root"] / rel).read_bytes()


def _read_all_ways(fs: EnvcryptFileSystem, path: str) -> list[BaseException]:
    errors: list[BaseException] = []
    for read in (lambda: fs.cat_file(path), lambda: fs.cat_file(path, 10, 20),
                 lambda: fs.cat_ranges([path, path], [0, 100], [10, 110], on_error="raise"),
                 lambda: fs.open(path, "rb").read()):
        with pytest.raises(EnvcryptError) as caught:
            read()
        errors.append(caught.value)
    return errors


def test_a_copied_object_of_another_tenant_stays_untrusted(lake: dict[str, Any]) -> None:
    copy = lake["root"] / "tenants/a/copy.bin"
    copy.write_bytes(_stored(lake, "tenants/b/secret.bin"))  # header bytes identical to the cached ones
    errors = _read_all_ways(lake["fs"], str(copy))
    assert all(isinstance(e, UntrustedKeyError) for e in errors)
    with pytest.raises(UntrustedKeyError):
        envcrypt.decrypt(copy.read_bytes(), trusted_keys="local:tenant-a")
    assert lake["calls"] == ["local:tenant-b/1"]  # b's key was never asked for a's read either


def test_a_slot_relabelled_to_the_trusted_key_does_not_hit_the_cache(lake: dict[str, Any]) -> None:
    blob = _stored(lake, "tenants/b/secret.bin")
    header, size = parse_header(blob)
    b_slot = header.key_slots[0]
    forged = header.with_slots((KeySlot("local:tenant-a/1", b_slot.wrap_algorithm, b_slot.wrapped_dek),))
    path = lake["root"] / "tenants/a/relabelled.bin"
    path.write_bytes(forged.pack() + blob[size:])
    errors = _read_all_ways(lake["fs"], str(path))
    assert errors and not any(isinstance(e, UntrustedKeyError) for e in errors)  # tried, and refused
    assert set(lake["calls"][1:]) == {"local:tenant-a/1"}  # a real unwrap under a's key, which fails


def test_a_foreign_slot_beside_a_trusted_one_is_never_used(lake: dict[str, Any]) -> None:
    b_blob = _stored(lake, "tenants/b/secret.bin")
    b_header, b_size = parse_header(b_blob)
    a_slot = parse_header(_stored(lake, "tenants/a/own.bin"))[0].key_slots[0]
    forged = b_header.with_slots((a_slot, b_header.key_slots[0]))  # a's slot wraps another DEK
    path = lake["root"] / "tenants/a/mixed.bin"
    path.write_bytes(forged.pack() + b_blob[b_size:])
    for error in _read_all_ways(lake["fs"], str(path)):
        assert not isinstance(error, UntrustedKeyError)  # a's slot was tried: the DEK fails b's commitment
    assert "local:tenant-b/1" not in lake["calls"][1:]
