"""Key policy, tree encryption/decryption, migration, rewrap and signed manifests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import pytest

from envcrypt import EnvcryptError, inspect
from envcrypt.format import CHUNK_SIZE
from envcrypt.fs import EnvcryptFileSystem, trees
from envcrypt.fs import manifest as mf
from envcrypt.keys.vault import LocalVault

from .fs_helpers import make_key


def _tree(root: Path) -> dict[str, bytes]:
    files = {"a.csv": b"id,email\n1,x@example.com\n", "sub/b.bin": os.urandom(3 * CHUNK_SIZE + 7),
             "sub/deeper/c.txt": b"hello " * 5000, "empty": b""}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_per_tenant_keys_and_crypto_shredding() -> None:
    make_key("tenant-a")
    make_key("tenant-b")
    fs, root = fsspec.core.url_to_fs(
        "envcrypt::memory://lake-policy",
        envcrypt={"key_policy": {"lake-policy/tenants/a/": "local:tenant-a",
                                 "memory://lake-policy/tenants/b/": "local:tenant-b"}},
    )
    fs.pipe_file(f"{root}/tenants/a/x.csv", b"alpha")
    fs.pipe_file(f"{root}/tenants/b/y.csv", b"beta")
    fs.pipe_file(f"{root}/shared.csv", b"common")
    memory = fsspec.filesystem("memory")
    slot = lambda p: inspect(memory.cat_file(p)).key_uris  # noqa: E731
    assert slot(f"{root}/tenants/a/x.csv") == ["local:tenant-a/1"]
    assert slot(f"{root}/tenants/b/y.csv") == ["local:tenant-b/1"]
    assert slot(f"{root}/shared.csv") == ["local:default/1"]
    vault = LocalVault()
    vault.delete_key("tenant-a")
    vault.purge_key("tenant-a")
    with pytest.raises(EnvcryptError):
        fs.cat_file(f"{root}/tenants/a/x.csv")
    assert fs.cat_file(f"{root}/tenants/b/y.csv") == b"beta"
    memory.rm(root, recursive=True)


def test_encrypt_and_decrypt_tree_resumable(tmp_path: Path) -> None:
    src, enc, dec = tmp_path / "src", tmp_path / "enc", tmp_path / "dec"
    src.mkdir()
    files = _tree(src)
    report = trees.encrypt_tree(str(src), f"file://{enc}", progress=False)
    assert report.ok and len(report.done) == len(files)
    for rel, data in files.items():
        stored = (enc / rel).read_bytes()
        assert stored[:8] == b"ENVCRYPT" and (not data or data[:20] not in stored)
    again = trees.encrypt_tree(str(src), f"file://{enc}", progress=False)
    assert again.done == [] and len(again.skipped) == len(files)
    (enc / "sub/b.bin").unlink()  # an interrupted run: only the missing object is redone
    resumed = trees.encrypt_tree(str(src), f"file://{enc}", progress=False)
    assert [p.rsplit("/", 1)[-1] for p in resumed.done] == ["b.bin"]
    back = trees.decrypt_tree(f"file://{enc}", str(dec), progress=False)
    assert back.ok and len(back.done) == len(files)
    for rel, data in files.items():
        assert (dec / rel).read_bytes() == data
    assert trees.decrypt_tree(f"file://{enc}", str(dec), progress=False).done == []


def test_migrate_in_place(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    files = _tree(tmp_path / "data")
    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    fs.pipe_file(str(tmp_path / "data/already.bin"), b"enc")
    before = (tmp_path / "data/already.bin").read_bytes()
    report = trees.migrate(str(tmp_path / "data"), progress=False)
    assert report.ok and len(report.done) == len(files) and len(report.skipped) == 1
    assert (tmp_path / "data/already.bin").read_bytes() == before
    for rel, data in files.items():
        assert (tmp_path / "data" / rel).read_bytes()[:8] == b"ENVCRYPT"
        assert fs.cat_file(str(tmp_path / "data" / rel)) == data
    assert trees.migrate(str(tmp_path / "data"), progress=False).done == []


def test_rewrap_prefix_replaces_only_key_slots(tmp_path: Path) -> None:
    old = make_key("old")
    fs = EnvcryptFileSystem(target_protocol="file", key_uri="local:old", skip_instance_cache=True)
    data = os.urandom(5 * CHUNK_SIZE)
    paths = [str(tmp_path / f"r/{i}") for i in range(3)]
    for p in paths:
        fs.makedirs(os.path.dirname(p), exist_ok=True)
        fs.pipe_file(p, data)
    before = {p: Path(p).read_bytes() for p in paths}
    reader = fs.open(paths[0], "rb")
    assert reader.read(10) == data[:10]
    LocalVault().rotate_key("old")
    options = {"envcrypt": {"key_uri": "local:old"}}
    report = trees.rewrap(f"file://{tmp_path}/r", "local:old", recursive=True, progress=False,
                          storage_options=options)
    assert report.ok and len(report.done) == 3
    for p in paths:
        after = Path(p).read_bytes()
        old_info, new_info = inspect(before[p]), inspect(after)
        assert old_info.key_uris == [old + "/1"] and new_info.key_uris == ["local:old/2"]
        assert after[new_info.header_size :] == before[p][old_info.header_size :]  # body byte-identical
        assert fs.cat_file(p) == data
    reader.seek(4 * CHUNK_SIZE)
    assert reader.read() == data[4 * CHUNK_SIZE :]  # an open reader follows the rewrap
    again = trees.rewrap(f"file://{tmp_path}/r", "local:old", recursive=True, progress=False, storage_options=options)
    assert again.skipped == sorted(paths)


def test_rewrap_prefix_to_another_key_reencrypts(tmp_path: Path) -> None:
    make_key("old")
    new = make_key("new-key-with-longer-name")
    fs = EnvcryptFileSystem(target_protocol="file", key_uri="local:old", skip_instance_cache=True)
    data = os.urandom(2 * CHUNK_SIZE + 5)
    fs.makedirs(str(tmp_path / "r"), exist_ok=True)
    fs.pipe_file(str(tmp_path / "r/x"), data)
    before = (tmp_path / "r/x").read_bytes()
    url = f"file://{tmp_path}/r"
    refused = trees.rewrap(url, new, recursive=True, progress=False)  # reads trust only the default key
    assert not refused.ok and "UntrustedKeyError" in refused.failed[0][1]
    assert (tmp_path / "r/x").read_bytes() == before
    report = trees.rewrap(url, new, recursive=True, progress=False,
                          storage_options={"envcrypt": {"trusted_keys": ["local:old"]}})
    assert report.ok and report.done == [str(tmp_path / "r/x")]
    after = (tmp_path / "r/x").read_bytes()
    assert inspect(after).key_uris == [new + "/1"]
    assert after[inspect(after).header_size :][:56] != before[inspect(before).header_size :][:56]  # a fresh DEK
    reader = EnvcryptFileSystem(target_protocol="file", key_uri="local:new-key-with-longer-name",
                                skip_instance_cache=True)
    assert reader.cat_file(str(tmp_path / "r/x")) == data


def test_signed_manifest_detects_add_remove_swap_rollback() -> None:
    signer = make_key("signer", "ec-p256")
    fs = EnvcryptFileSystem(target_protocol="memory", target_options={}, skip_instance_cache=True)
    root = "/manifest-lake"
    for name in ("a", "b", "c"):
        fs.pipe_file(f"{root}/{name}", name.encode() * 100)
    old_a = fs.target.cat_file(f"{root}/a")
    fs.pipe_file(f"{root}/a", b"a2" * 100)  # a newer version of a
    mf.sign_manifest(fs, root, "local:signer")
    fs.pipe_file(f"{root}/a", b"a3" * 100)
    mf.sign_manifest(fs, root, signer)  # re-signed: remembers a's older digests
    assert mf.verify_manifest(fs, root).ok
    LocalVault().rotate_key("default")
    trees.rewrap(f"envcrypt::memory://{root}", "local:default", recursive=True, progress=False)
    assert fs.target.cat_file(f"{root}/b")[:80].count(b"local:default/2") == 1
    assert mf.verify_manifest(fs, root).ok  # a rotation is not a change
    b, c = fs.target.cat_file(f"{root}/b"), fs.target.cat_file(f"{root}/c")
    fs.target.pipe_file(f"{root}/b", c)
    fs.target.pipe_file(f"{root}/c", b)
    fs.pipe_file(f"{root}/new", b"x")
    fs.target.pipe_file(f"{root}/a", old_a)
    result = mf.verify_manifest(fs, root)
    assert not result.ok
    assert result.added == ["new"] and result.removed == []
    assert sorted(result.swapped) == [("b", "c"), ("c", "b")]
    assert result.rolled_back == [] and result.changed == ["a"]  # older than any signed version
    fs.target.rm_file(f"{root}/new")
    fs.target.pipe_file(f"{root}/a", b"junk")
    assert mf.verify_manifest(fs, root).changed == ["a"]
    # tampering with the manifest itself breaks the signature
    path = f"{root}/{mf.MANIFEST_NAME}"
    fs.target.pipe_file(path, fs.target.cat_file(path).replace(b'"size": 100', b'"size": 101', 1))
    assert mf.verify_manifest(fs, root).error is not None
    fs.target.rm(root, recursive=True)


def test_manifest_reports_rollback_to_a_signed_version() -> None:
    make_key("signer2", "ec-p256")
    fs = EnvcryptFileSystem(target_protocol="memory", target_options={}, skip_instance_cache=True)
    root = "/manifest-rollback"
    fs.pipe_file(f"{root}/x", b"v1")
    v1 = fs.target.cat_file(f"{root}/x")
    mf.sign_manifest(fs, root, "local:signer2")
    fs.pipe_file(f"{root}/x", b"v2")
    mf.sign_manifest(fs, root, "local:signer2")
    fs.target.pipe_file(f"{root}/x", v1)
    assert mf.verify_manifest(fs, root).rolled_back == ["x"]
    fs.target.rm(root, recursive=True)


def test_tree_reruns_redo_files_edited_in_place_with_the_same_size(tmp_path: Path) -> None:
    from envcrypt.fs import trees

    src, enc, dec = tmp_path / "src", tmp_path / "enc", tmp_path / "dec"
    src.mkdir()
    (src / "acct.csv").write_bytes(b"name,balance\nalice,100\n")
    assert trees.encrypt_tree(str(src), f"file://{enc}", progress=False).done
    assert trees.decrypt_tree(f"file://{enc}", str(dec), progress=False).done
    assert trees.encrypt_tree(str(src), f"file://{enc}", progress=False).done == []  # unchanged: skipped
    (src / "acct.csv").write_bytes(b"name,balance\nalice,999\n")  # same size
    newer = os.stat(enc / "acct.csv").st_mtime + 5
    os.utime(src / "acct.csv", (newer, newer))
    assert trees.encrypt_tree(str(src), f"file://{enc}", progress=False).done == [str(src / "acct.csv")]
    later = os.stat(dec / "acct.csv").st_mtime + 5
    os.utime(enc / "acct.csv", (later, later))  # as if written after the plain copy was made
    assert trees.decrypt_tree(f"file://{enc}", str(dec), progress=False).done == [str(enc / "acct.csv")]
    assert (dec / "acct.csv").read_bytes() == b"name,balance\nalice,999\n"
    forced = trees.encrypt_tree(str(src), f"file://{enc}", progress=False, force=True)
    assert forced.done == [str(src / "acct.csv")]


def test_migrate_leaves_a_concurrent_write_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from envcrypt.fs import trees

    (tmp_path / "m").mkdir()
    plain = tmp_path / "m" / "p.csv"
    plain.write_bytes(b"v1 plain")
    fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
    copy = trees._copy

    def copy_and_race(src: Any, dst: Any) -> None:
        fs.pipe_file(str(plain), b"v2 written encrypted by an application meanwhile")
        copy(src, dst)

    monkeypatch.setattr(trees, "_copy", copy_and_race)
    report = trees.migrate(f"file://{tmp_path / 'm'}", progress=False)
    assert [p for p, _ in report.failed] == [str(plain)] and "ConcurrentModification" in report.failed[0][1]
    monkeypatch.undo()
    assert fs.cat_file(str(plain)) == b"v2 written encrypted by an application meanwhile"
