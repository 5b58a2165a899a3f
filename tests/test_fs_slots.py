"""Rewriting key slots in place (envcrypt/fs/_slots.py) is a compare-and-swap: a write that lands
during a rewrap is never lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import envcrypt
from envcrypt.fs import EnvcryptFileSystem

from .fs_helpers import memory_envcrypt


def _slots_of(fs: EnvcryptFileSystem, path: str) -> list[str]:
    return envcrypt.inspect(fs.target.cat_file(path)).key_uris


@pytest.mark.parametrize("where", ["memory", "local"])
def test_a_write_during_a_rewrap_is_not_lost(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from envcrypt.fs import _slots, trees
    from envcrypt.fs._sinks import ConcurrentModificationError
    from envcrypt.keys.vault import LocalVault

    if where == "memory":
        fs, _ = memory_envcrypt()
        path = "/l/x"
    else:
        fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
        path = str(tmp_path / "x")
    fs.pipe_file(path, b"v1")
    vault = LocalVault()  # (monkeypatch.undo below also undoes the test's $ENVCRYPT_VAULT)
    vault.rotate_key("default")  # a rotation: the slots move to local:default/2
    copy = _slots.shutil.copyfileobj

    def copy_and_race(src: Any, dst: Any, length: int = 0) -> None:
        fs.pipe_file(path, b"v2 written by an application during the rewrap")
        copy(src, dst, length)

    monkeypatch.setattr(_slots.shutil, "copyfileobj", copy_and_race)
    with pytest.raises(ConcurrentModificationError):
        trees.rewrap_object(fs, path, ["local:default"])
    monkeypatch.undo()
    assert fs.cat_file(path) == b"v2 written by an application during the rewrap"
    assert _slots_of(fs, path) == ["local:default/2"]  # v2 was written after the rotation
    fs.pipe_file(path, b"v3")
    vault.rotate_key("default")
    assert trees.rewrap_object(fs, path, ["local:default"])  # a rerun rewraps what is there
    assert fs.cat_file(path) == b"v3" and _slots_of(fs, path) == ["local:default/3"]
