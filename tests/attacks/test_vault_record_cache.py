"""The record cache (vault_index.RecordCache) against a vault-directory writer and other
processes: what a process keeps between operations never outlives a change on disk.

A record is served from memory only while the stamps (inode, size, mtime, ctime) of its
file and of index.json are those it was read under; a state change by another process,
a replayed older copy, or an edit in place with the old size and mtime put back all
change a stamp, so the next operation reads the files again and refuses what it refused
before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envcrypt.errors import KeyDeletedError, KeyDisabledError, VaultError
from envcrypt.keys import vault_files, vault_store
from envcrypt.keys.vault import LocalVault

#: a short "racy" window for the tests (the default is 1 s), with a sleep past it before the
#: cache is warmed, so that stamps are trusted and every later change is one the cache must see
RACY_S = 0.05


@pytest.fixture
def warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalVault:
    monkeypatch.setattr(vault_files, "RACY_NS", int(RACY_S * 1e9))
    vault = LocalVault(tmp_path / "vault")
    vault.create_key("k")
    time.sleep(2 * RACY_S)
    vault.wrap_key("k", os.urandom(32))  # reads and keeps the record
    return vault


def _in_other_process(vault: LocalVault, code: str) -> None:
    script = f"from envcrypt.keys.vault import LocalVault\nv = LocalVault({str(vault.path)!r})\n{code}\n"
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])


def test_a_directory_swapped_in_for_one_read_and_back_is_not_kept(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone who can rename the vault directory swaps an old copy in just after the stamps of
    the paths were taken and back just after the read: that one operation saw the old copy (the
    race itself), but what it read is not kept under the genuine files' stamps."""
    import shutil

    monkeypatch.setattr(vault_files, "RACY_NS", int(RACY_S * 1e9))
    path = tmp_path / "vault"
    LocalVault(path).create_key("k")
    shutil.copytree(path, tmp_path / "old", symlinks=True)  # k still enabled in the copy
    os.chmod(tmp_path / "old", 0o700)
    _in_other_process(LocalVault(path), "v.disable_key('k')")
    time.sleep(2 * RACY_S)
    real = vault_store.VaultStore._read_record

    def swapped(self: vault_store.VaultStore, *args: object, **kwargs: object) -> object:
        os.rename(path, tmp_path / "genuine")
        os.rename(tmp_path / "old", path)
        try:
            return real(self, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            os.rename(path, tmp_path / "old")
            os.rename(tmp_path / "genuine", path)

    vault = LocalVault(path)
    with monkeypatch.context() as m:
        m.setattr(vault_store.VaultStore, "_read_record", swapped)
        vault.wrap_key("k", os.urandom(32))  # served from the old copy during the swap
    with pytest.raises(KeyDisabledError):
        vault.wrap_key("k", os.urandom(32))


def test_a_kept_record_is_served_without_reading_the_files(warm: LocalVault,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []
    real = vault_store.read_json
    monkeypatch.setattr(vault_store, "read_json", lambda path, *a: reads.append(path) or real(path, *a))
    for _ in range(5):
        warm.wrap_key("k", os.urandom(32))
    assert reads == []


@pytest.mark.parametrize("change, error", [
    ("v.disable_key('k')", KeyDisabledError),
    ("v.delete_key('k')", KeyDeletedError),
    ("v.delete_key('k'); v.purge_key('k')", KeyDeletedError),
])
def test_a_change_by_another_process_takes_effect_on_the_next_operation(
        warm: LocalVault, change: str, error: type[Exception]) -> None:
    _in_other_process(warm, change)
    with pytest.raises(error):
        warm.wrap_key("k", os.urandom(32))


def test_a_replayed_record_is_refused_with_a_warm_cache(warm: LocalVault) -> None:
    record = warm.path / "keys" / "k.json"
    old, old_stat = record.read_bytes(), record.stat()
    warm.disable_key("k")
    time.sleep(2 * RACY_S)
    with pytest.raises(KeyDisabledError):
        warm.wrap_key("k", os.urandom(32))  # keeps the disabled record
    record.write_bytes(old)  # the attacker puts the enabled copy back, with its old mtime
    os.utime(record, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns))
    with pytest.raises(VaultError, match="rollback"):
        warm.wrap_key("k", os.urandom(32))


def test_an_edit_in_place_with_size_and_mtime_put_back_is_seen(warm: LocalVault) -> None:
    record = warm.path / "keys" / "k.json"
    raw, st = record.read_bytes(), record.stat()
    edited = raw.replace(b'"enabled": true', b'"enabled": fals', 1)  # same size
    assert edited != raw and len(edited) == len(raw)
    with open(record, "r+b") as f:  # same inode
        f.write(edited)
    os.utime(record, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(record).st_ino == st.st_ino and os.stat(record).st_mtime_ns == st.st_mtime_ns
    with pytest.raises(VaultError):
        warm.wrap_key("k", os.urandom(32))


def test_a_replayed_index_is_refused_with_a_warm_cache(warm: LocalVault) -> None:
    index = warm.path / "index.json"
    old = index.read_bytes()
    warm.rotate_key("k")
    time.sleep(2 * RACY_S)
    warm.wrap_key("k", os.urandom(32))
    index.write_bytes(old)
    with pytest.raises(VaultError):
        warm.wrap_key("k", os.urandom(32))


def test_a_record_changed_within_the_racy_window_is_not_kept(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    vault = LocalVault(tmp_path / "vault")
    vault.create_key("k")  # just written: its stamp proves nothing yet (default window, 1 s)
    reads: list[Path] = []
    real = vault_store.read_json
    monkeypatch.setattr(vault_store, "read_json", lambda path, *a: reads.append(path) or real(path, *a))
    vault.wrap_key("k", os.urandom(32))
    vault.wrap_key("k", os.urandom(32))
    assert len(reads) == 2
