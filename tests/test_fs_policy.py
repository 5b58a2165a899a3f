"""Key policy (envcrypt/fs/policy.py): prefixes are anchored (a table in tests/vectors/key_policy.json),
and a copy or move into another tenant's prefix is re-encrypted under that tenant's key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import pytest

import envcrypt
from envcrypt import errors
from envcrypt.fs import EnvcryptFileSystem, KeyPolicy

from .fs_helpers import make_key, memory_envcrypt
from .vector_files import case_id, load

POLICY = load("key_policy.json")


@pytest.mark.parametrize("case", POLICY["tests"], ids=case_id)
def test_key_policy_longest_prefix(case: dict[str, Any]) -> None:
    policy = KeyPolicy(case["policy"])
    if case["normalize"] is None:
        assert policy.for_path(case["path"], anchor=case["anchor"]) == case["expected"]
    else:
        strip = fsspec.filesystem(case["normalize"])._strip_protocol
        assert policy.for_path(case["path"], strip, anchor=case["anchor"]) == case["expected"]


@pytest.mark.parametrize("case", POLICY["invalid"], ids=case_id)
def test_key_policy_refuses(case: dict[str, Any]) -> None:
    error = {"ValueError": ValueError, "TypeError": TypeError}.get(case["error"]) or getattr(errors, case["error"])
    with pytest.raises(error):
        KeyPolicy(case["policy"])


def _slots(target: Any, path: str) -> list[str]:
    return envcrypt.inspect(target.cat_file(path)).key_uris


def test_policy_prefixes_are_anchored_not_matched_anywhere() -> None:
    make_key("tenant-a")
    make_key("tenant-b")
    policy = {"/lake/tenants/a/": "local:tenant-a", "memory://lake/tenants/b/": "local:tenant-b",
              "": "local:default"}
    fs, target = memory_envcrypt(key_policy=policy)
    fs.pipe_file("/lake/tenants/b/uploads/tenants/a/x.csv", b"b's upload")
    fs.pipe_file("/lake/tenants/a/y.csv", b"a's")
    fs.pipe_file("/other/lake/tenants/a/z.csv", b"not a's")
    assert _slots(target, "/lake/tenants/b/uploads/tenants/a/x.csv") == ["local:tenant-b/1"]
    assert _slots(target, "/lake/tenants/a/y.csv") == ["local:tenant-a/1"]
    assert _slots(target, "/other/lake/tenants/a/z.csv") == ["local:default/1"]


def test_copy_and_move_into_another_tenant_take_its_key() -> None:
    make_key("tenant-a")
    make_key("tenant-b")
    policy = {"/lake/a/": "local:tenant-a", "/lake/b/": "local:tenant-b"}
    fs, target = memory_envcrypt(key_policy=policy)
    data = os.urandom(200_000)
    fs.pipe_file("/lake/a/x", data)
    stored = target.cat_file("/lake/a/x")
    fs.cp_file("/lake/a/x", "/lake/b/x")
    fs.mv("/lake/a/x", "/lake/b/moved")
    assert _slots(target, "/lake/b/x") == _slots(target, "/lake/b/moved") == ["local:tenant-b/1"]
    copied = target.cat_file("/lake/b/x")
    # re-encrypted under a fresh DEK: tenant b never receives the DEK tenant a's objects were sealed with
    body = envcrypt.inspect(stored).header_size
    assert copied[envcrypt.inspect(copied).header_size :][:56] != stored[body : body + 56]
    assert not target.exists("/lake/a/x")
    fs.cp_file("/lake/b/x", "/lake/b/same")  # same key: a plain ciphertext copy
    assert target.cat_file("/lake/b/same") == copied
    from envcrypt.keys.vault import LocalVault

    LocalVault().delete_key("tenant-a")
    LocalVault().purge_key("tenant-a")  # shredding a no longer reaches what now belongs to b
    assert fs.cat_file("/lake/b/x") == fs.cat_file("/lake/b/moved") == data


@pytest.mark.parametrize("where", ["memory", "local"])
def test_moving_a_tree_between_tenants_rekeys_every_object(where: str, tmp_path: Path) -> None:
    make_key("tenant-a")
    make_key("tenant-b")
    if where == "memory":
        base = "/mvlake"
        fs, target = memory_envcrypt(key_policy={f"{base}/a/": "local:tenant-a", f"{base}/b/": "local:tenant-b"})
    else:
        base = str(tmp_path / "mvlake")
        fs = EnvcryptFileSystem(key_policy={f"file://{base}/a/": "local:tenant-a",
                                            f"file://{base}/b/": "local:tenant-b"}, skip_instance_cache=True)
        target = fs.target
        os.makedirs(f"{base}/a/sub")
        os.makedirs(f"{base}/b")
    fs.pipe_file(f"{base}/a/sub/x", b"x")
    fs.pipe_file(f"{base}/a/y", b"y")
    fs.mv(f"{base}/a", f"{base}/b/moved", recursive=True)
    assert not target.exists(f"{base}/a/y")
    assert _slots(target, f"{base}/b/moved/sub/x") == _slots(target, f"{base}/b/moved/y") == ["local:tenant-b/1"]
    assert fs.cat_file(f"{base}/b/moved/sub/x") == b"x"
