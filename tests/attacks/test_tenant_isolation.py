"""Issue 7, items 2 and 3: one tenant's key never opens another tenant's data.

Item 2: with the DEK cache, many objects share one DEK.  A copy or move into another
tenant's prefix (or a rewrap to another key) must not hand that DEK to the other
tenant's key, or the sibling objects that were never shared open under it, and stay
readable after the first tenant's key is destroyed.

Item 3: a key policy that matched the path as text gave ``tenants/b/../a/x`` tenant
b's key while the disk stored it under tenant a; after a's key was purged it still
opened.  Paths with ``.``/``..``/empty segments are refused, symlinks are resolved on
local disks, and the policy's key is the one a read accepts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import envcrypt
from envcrypt.chunked import open_message
from envcrypt.errors import EnvcryptError, UnsafePathError, UntrustedKeyError, WrongKeyError
from envcrypt.format import parse_header
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.vault import LocalVault

DATA = [os.urandom(40_000) for _ in range(3)]


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    v = LocalVault(_isolated_vault)
    v.create_key("tenant-a")
    v.create_key("tenant-b")
    return v


def _dek_through(vault: LocalVault, blob: bytes) -> bytes:
    """What tenant b (holding its own key) learns from an object under its key: the DEK."""
    slot = parse_header(blob)[0].key_slots[0]
    return vault.unwrap_key(slot.key_uri, slot.wrapped_dek)


def _opens_with(dek: bytes, blob: bytes) -> bool:
    header, size = parse_header(blob)
    try:
        open_message(dek, header.immutable, blob[size : size + 56])
    except WrongKeyError:
        return False
    return True


def _lake(tmp_path: Path, **options: object) -> EnvcryptFileSystem:
    root = tmp_path / "lake"
    (root / "tenants" / "a").mkdir(parents=True, exist_ok=True)
    (root / "tenants" / "b").mkdir(parents=True, exist_ok=True)
    policy = {f"{root}/tenants/a/": "local:tenant-a", f"{root}/tenants/b/": "local:tenant-b"}
    return EnvcryptFileSystem(target_protocol="file", key_policy=policy, skip_instance_cache=True,
                              **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["mv", "cp"])
def test_moving_one_object_to_another_tenant_does_not_open_its_siblings(
    vault: LocalVault, tmp_path: Path, how: str
) -> None:
    fs = _lake(tmp_path, resolver_options={"dek_cache": True})  # as KMS keys are by default
    a = f"{tmp_path}/lake/tenants/a"
    for i, data in enumerate(DATA):
        fs.pipe_file(f"{a}/{i}", data)
    stored = [Path(f"{a}/{i}").read_bytes() for i in range(3)]
    slots = {parse_header(blob)[0].key_slots[0].wrapped_dek for blob in stored}
    assert len(slots) == 1  # the cache made the three objects share one DEK
    shared_dek = vault.unwrap_key("local:tenant-a/1", slots.pop())
    assert all(_opens_with(shared_dek, blob) for blob in stored)

    getattr(fs, how)(f"{a}/0", f"{tmp_path}/lake/tenants/b/0")
    moved = Path(f"{tmp_path}/lake/tenants/b/0").read_bytes()
    assert envcrypt.inspect(moved).key_uris == ["local:tenant-b/1"]
    # tenant b unwraps the DEK of what it was given: it opens that object and nothing else
    dek_b = _dek_through(vault, moved)
    assert _opens_with(dek_b, moved) and dek_b != shared_dek
    assert not any(_opens_with(dek_b, blob) for blob in stored[1:])
    # grafting b's slot onto a sibling does not open it either
    sibling, size = parse_header(stored[1])
    grafted = sibling.with_slots(parse_header(moved)[0].key_slots).pack() + stored[1][size:]
    with pytest.raises(WrongKeyError):
        envcrypt.decrypt(grafted, trusted_keys="local:tenant-b")
    # shredding tenant a leaves b's copy readable and a's siblings gone
    vault.delete_key("tenant-a")
    vault.purge_key("tenant-a")
    assert fs.cat_file(f"{tmp_path}/lake/tenants/b/0") == DATA[0]
    for i in (1, 2):
        with pytest.raises(envcrypt.KeyDeletedError):
            fs.cat_file(f"{a}/{i}")


def test_rewrapping_one_of_several_objects_that_share_a_dek_gives_it_a_fresh_dek(vault: LocalVault) -> None:
    blobs = [envcrypt.encrypt(d, "local:tenant-a", dek_cache=True) for d in DATA]
    shared = vault.unwrap_key("local:tenant-a/1", parse_header(blobs[0])[0].key_slots[0].wrapped_dek)
    out = envcrypt.rewrap(blobs[0], "local:tenant-b", trusted_keys="local:tenant-a", dek_cache=True)
    dek_b = _dek_through(vault, out)
    assert dek_b != shared and not any(_opens_with(dek_b, b) for b in blobs[1:])
    assert envcrypt.decrypt(out, trusted_keys="local:tenant-b") == DATA[0]


@pytest.mark.parametrize("path", [
    "tenants/b/../a/x", "tenants//a/x", "tenants/./a/x", "./tenants/a/x", "tenants/a/x/..",
])
def test_dot_and_empty_segments_are_refused_under_a_key_policy(vault: LocalVault, tmp_path: Path, path: str) -> None:
    fs = _lake(tmp_path)
    full = f"{tmp_path}/lake/{path}"
    with pytest.raises(UnsafePathError):
        fs.pipe_file(full, b"smuggled")
    assert not any(p.is_file() for p in (tmp_path / "lake").rglob("*"))  # nothing was written
    fs.pipe_file(f"{tmp_path}/lake/tenants/a/x", b"a's own")
    with pytest.raises(UnsafePathError):  # refused before the storage is asked
        fs.cat_file(full)


def test_a_symlink_into_another_tenant_takes_the_key_of_where_the_data_lands(vault: LocalVault, tmp_path: Path) -> None:
    fs = _lake(tmp_path)
    link = tmp_path / "lake" / "tenants" / "b" / "shortcut"
    link.symlink_to(tmp_path / "lake" / "tenants" / "a")  # made by someone who can write the disk
    fs.pipe_file(f"{link}/x", b"written through b's path")
    stored = (tmp_path / "lake" / "tenants" / "a" / "x").read_bytes()
    assert envcrypt.inspect(stored).key_uris == ["local:tenant-a/1"]


def test_nothing_under_a_purged_tenant_opens(vault: LocalVault, tmp_path: Path) -> None:
    fs = _lake(tmp_path)
    a, b = f"{tmp_path}/lake/tenants/a", f"{tmp_path}/lake/tenants/b"
    fs.pipe_file(f"{a}/real", b"tenant a's rows")
    fs.pipe_file(f"{b}/theirs", b"tenant b's rows")
    # the storage writer plants an object made under b's key inside a's prefix
    shutil.copy(f"{b}/theirs", f"{a}/planted")
    with pytest.raises(UntrustedKeyError):  # a read under a's prefix accepts only a's key
        fs.cat_file(f"{a}/planted")
    vault.delete_key("tenant-a")
    vault.purge_key("tenant-a")
    for name in ("real", "planted"):
        with pytest.raises(EnvcryptError):
            fs.cat_file(f"{a}/{name}")
    assert fs.cat_file(f"{b}/theirs") == b"tenant b's rows"
    multi = _lake(tmp_path, trusted_keys=["local:tenant-b"])  # a reader of several tenants names them
    assert multi.cat_file(f"{a}/planted") == b"tenant b's rows"
