"""Regression tests for review findings on the envcrypt filesystem (stale heads, policy anchoring, atomicity...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

import envcrypt
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._heads import HEADS

from .fs_helpers import make_key, memory_envcrypt


class CountingLocalFileSystem(LocalFileSystem):
    """A real local filesystem that counts head probes (``cat_ranges`` batches)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.range_batches = 0

    def cat_ranges(self, paths: Any, starts: Any, ends: Any, **kwargs: Any) -> Any:
        self.range_batches += 1
        return super().cat_ranges(paths, starts, ends, **kwargs)


# ---------------------------------------------------------------- 1. stale head cache


def _rewrite_keeping_mtime(path: str, data: bytes, before: os.stat_result) -> None:
    """Overwrite ``path`` in place and put its mtime back, as ``cp -p``/``rsync -t``/``tar x`` do.

    The inode change time cannot be put back; the kernel's clock for it is
    coarse (a few ms), so the write is repeated until it shows a new one: the
    premise of the test, never an assertion on time.
    """
    import time

    while True:
        with open(path, "r+b") as f:
            f.write(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        if os.stat(path).st_ctime_ns != before.st_ctime_ns:
            return
        time.sleep(0.005)


def test_in_place_rewrite_with_restored_mtime_is_seen(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
    path = str(tmp_path / "x")
    fs.pipe_file(path, b"A" * 100)
    before = os.stat(path)
    assert fs.info(path)["size"] == 100 and fs.cat_file(path) == b"A" * 100  # head cached
    blob = envcrypt.encrypt(b"B" * 100, "local:default")
    assert len(blob) == before.st_size
    # rewritten in place, same inode, same size, mtime put back (cp -p, rsync -t)
    _rewrite_keeping_mtime(path, blob, before)
    assert os.stat(path).st_ino == before.st_ino
    assert fs.cat_file(path) == b"B" * 100


def test_plaintext_allow_never_serves_ciphertext_from_a_stale_head(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(key_uri="local:default", plaintext="allow", skip_instance_cache=True)
    blob = envcrypt.encrypt(b"B" * 100, "local:default")
    path = tmp_path / "y"
    path.write_bytes(b"P" * len(blob))
    before = os.stat(path)
    assert fs.cat_file(str(path)) == b"P" * len(blob)
    _rewrite_keeping_mtime(str(path), blob, before)
    assert fs.cat_file(str(path)) == b"B" * 100
    assert fs.info(str(path))["size"] == 100


def test_memory_in_place_rewrite_is_seen() -> None:
    fs, target = memory_envcrypt(key_uri="local:default")
    fs.pipe_file("/s/x", b"A" * 100)
    assert fs.cat_file("/s/x") == b"A" * 100
    blob = envcrypt.encrypt(b"B" * 100, "local:default")
    with target.open("/s/x", "r+b") as f:  # keeps the memory file's creation time and size
        f.write(blob)
    assert fs.cat_file("/s/x") == b"B" * 100


def test_local_heads_are_cached_until_the_file_changes(tmp_path: Path) -> None:
    target = CountingLocalFileSystem(auto_mkdir=True, skip_instance_cache=True)
    fs = EnvcryptFileSystem(fs=target, skip_instance_cache=True)
    tmp_path = tmp_path / "heads"
    for i in range(5):
        fs.pipe_file(str(tmp_path / f"{i}"), b"z" * i)
    HEADS.clear()
    assert sorted(e["size"] for e in fs.ls(str(tmp_path), detail=True)) == [0, 1, 2, 3, 4]
    batches = target.range_batches
    assert batches == 1
    fs.ls(str(tmp_path), detail=True)
    assert target.range_batches == batches  # served from the cache
    fs.pipe_file(str(tmp_path / "3"), b"longer" * 100)
    assert fs.info(str(tmp_path / "3"))["size"] == 600


# ---------------------------------------------------------------- 2. one version per head


def _rewrapped(stored: bytes, key_uris: list[str]) -> bytes:
    from envcrypt.format import parse_header
    from envcrypt.rewrap import rewrap_header

    _, size = parse_header(stored)
    return rewrap_header(stored, key_uris) + stored[size:]


def test_reader_follows_a_rewrap_even_when_its_size_was_wrong() -> None:
    import dataclasses

    from envcrypt.format import CHUNK_SIZE

    fs, target = memory_envcrypt()
    data = os.urandom(3 * CHUNK_SIZE + 77)
    fs.pipe_file("/m/x", data)
    with fs.open("/m/x") as f:
        # the head as a stale listing would give it: this version's bytes, another version's size
        head = f._head
        f._head = dataclasses.replace(head, stored_size=head.stored_size + 9,
                                      plaintext_size=len(data) + 9)
        f.size = f.cache.size = len(data) + 9
        stored = target.cat_file("/m/x")
        target.pipe_file("/m/x", _rewrapped(stored, ["local:default", "local:default/1"]))  # a longer header
        assert f.read() == data
        assert f.size == len(data)


# ---------------------------------------------------------------- 3. anchored key policy, re-keyed copies


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


def _slots_of(fs: EnvcryptFileSystem, path: str) -> list[str]:
    return envcrypt.inspect(fs.target.cat_file(path)).key_uris


# ---------------------------------------------------------------- 6. rewrap is a compare-and-swap


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


# ---------------------------------------------------------------- 7. local file modes


def test_local_modes_new_files_follow_umask_replacements_keep_theirs(tmp_path: Path) -> None:
    from envcrypt.fs import trees

    make_key("next")
    fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
    old = os.umask(0o022)
    try:
        fs.pipe_file(str(tmp_path / "new"), b"x")
        assert os.stat(tmp_path / "new").st_mode & 0o777 == 0o644
        plain = tmp_path / "tree" / "plain.csv"
        plain.parent.mkdir()
        plain.write_bytes(b"a,b\n")
        os.chmod(plain, 0o640)
        assert trees.migrate(f"file://{plain.parent}", progress=False).done == [str(plain)]
        assert os.stat(plain).st_mode & 0o777 == 0o640
        os.chmod(plain, 0o604)
        assert trees.rewrap(f"file://{plain}", "local:next", progress=False).done == [str(plain)]
        assert os.stat(plain).st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


# ---------------------------------------------------------------- 4. the root is the root


def test_root_paths_are_the_targets_root_not_the_current_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "only-in-cwd").write_bytes(b"")
    fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
    for root in ("/", "file:///", "envcrypt::file:///"):
        assert fs._strip_protocol(root) == "/"
    listed = fs.ls("/", detail=False)
    assert sorted(listed) == sorted(LocalFileSystem().ls("/", detail=False))
    assert str(tmp_path / "only-in-cwd") not in listed
    efs, path = fsspec.core.url_to_fs("envcrypt::file:///")
    assert path == "/" and efs.isdir(path)


# ---------------------------------------------------------------- 6. trees see same-size edits


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


# ---------------------------------------------------------------- 8. manifest verification


def test_manifest_checks_root_signer_serial_and_every_file() -> None:
    from envcrypt.fs import manifest as mf

    make_key("signer", "ec-p256")
    make_key("intruder", "ec-p256")
    fs, target = memory_envcrypt()
    fs.pipe_file("/lake/2025/part-0", b"old year")
    first = mf.sign_manifest(fs, "/lake/2025", "local:signer")
    fs.pipe_file("/lake/2026/part-0", b"new year")
    mf.sign_manifest(fs, "/lake/2026", "local:signer")
    assert mf.verify_manifest(fs, "/lake/2026", signer="local:signer").ok
    # the whole 2025 dataset, manifest included, copied over 2026
    snapshot = {n: target.cat_file(f"/lake/2026/{n}") for n in ("part-0", mf.MANIFEST_NAME)}
    for name in ("part-0", mf.MANIFEST_NAME):
        target.cp_file(f"/lake/2025/{name}", f"/lake/2026/{name}")
    result = mf.verify_manifest(fs, "/lake/2026")
    assert not result.ok and "root" in (result.error or "")
    assert mf.verify_manifest(fs, "/lake/2026", expected_root="/lake/2025").ok  # a deliberate move
    for name, data in snapshot.items():
        target.pipe_file(f"/lake/2026/{name}", data)
    # files the old scan ignored are listed now
    target.pipe_file("/lake/2026/sub/.envcrypt-manifest.json", b"x")
    target.pipe_file("/lake/2026/.envcrypt-tmp-zzz", b"x")
    assert sorted(mf.verify_manifest(fs, "/lake/2026").added) == [".envcrypt-tmp-zzz", "sub/.envcrypt-manifest.json"]
    target.rm_file("/lake/2026/sub/.envcrypt-manifest.json")
    target.rm_file("/lake/2026/.envcrypt-tmp-zzz")
    # another vault key signing: reported, and an error when the signer is pinned
    second = mf.sign_manifest(fs, "/lake/2026", "local:intruder")
    unpinned = mf.verify_manifest(fs, "/lake/2026")
    assert unpinned.ok and unpinned.signed_by == "local:intruder/1" and not unpinned.signer_checked
    pinned = mf.verify_manifest(fs, "/lake/2026", signer="local:signer")
    assert not pinned.ok and "intruder" in (pinned.error or "")
    # serials grow; an older manifest is rejected against a remembered minimum
    assert first.serial == 1 and second.serial == 2
    assert not mf.verify_manifest(fs, "/lake/2025", min_serial=2).ok
    assert mf.verify_manifest(fs, "/lake/2026", min_serial=2).ok


# ---------------------------------------------------------------- 9. only allowlisted target options travel


@pytest.mark.parametrize("options", [
    {"api_key": "S3CR3T"}, {"headers": {"Authorization": "Bearer S3CR3T"}}, {"private_key": "S3CR3T"},
    {"client_kwargs": {"aws_secret_access_key": "S3CR3T", "endpoint_url": "http://127.0.0.1:9"}},
    {"an_option_nobody_reviewed": "S3CR3T", "anon": True},
])
def test_pickles_and_json_carry_only_allowlisted_target_options(options: dict[str, Any]) -> None:
    import pickle

    from fsspec.implementations.memory import MemoryFileSystem

    built = EnvcryptFileSystem(target_protocol="memory", target_options=options, skip_instance_cache=True)
    given = EnvcryptFileSystem(fs=MemoryFileSystem(skip_instance_cache=True, **options), skip_instance_cache=True)
    for fs in (built, given):
        assert b"S3CR3T" not in pickle.dumps(fs)
        assert "S3CR3T" not in fs.to_json()
        copy = pickle.loads(pickle.dumps(fs))
        restored = EnvcryptFileSystem.from_json(fs.to_json())
        kept = {k: v for k, v in options.items() if k in ("anon", "client_kwargs")}
        if "client_kwargs" in kept:
            kept["client_kwargs"] = {"endpoint_url": "http://127.0.0.1:9"}
        assert copy._target_options == restored._target_options == kept
    trusted = EnvcryptFileSystem(target_protocol="memory", target_options=options, pickle_credentials=True,
                                 skip_instance_cache=True)
    assert b"S3CR3T" in pickle.dumps(trusted) and "S3CR3T" in trusted.to_json()  # asked for


# ---------------------------------------------------------------- 10. downloads and cross-store copies are atomic


def test_failed_get_keeps_an_existing_local_file(tmp_path: Path) -> None:
    from envcrypt import IntegrityError

    fs, target = memory_envcrypt()
    fs.pipe_file("/g", os.urandom(300_000))
    stored = bytearray(target.cat_file("/g"))
    stored[len(stored) // 2] ^= 1
    target.pipe_file("/g", bytes(stored))
    tmp_path = tmp_path / "get"
    tmp_path.mkdir()
    out = tmp_path / "out.bin"
    out.write_bytes(b"precious")
    with pytest.raises(IntegrityError):
        fs.get_file("/g", str(out))
    assert out.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.bin"]  # no temp file left
    fs.pipe_file("/g", b"fresh")
    fs.get_file("/g", str(out))
    assert out.read_bytes() == b"fresh"


def test_cross_store_cli_copy_publishes_nothing_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import uuid

    import fsspec

    from envcrypt.cli import fs as cli_fs
    from envcrypt.cli import main

    src = f"memory://cp-{uuid.uuid4().hex[:8]}/obj"
    efs, path = fsspec.core.url_to_fs("envcrypt::" + src)
    efs.pipe_file(path, os.urandom(100_000))
    (tmp_path / "dst").mkdir()
    dst = tmp_path / "dst" / "obj"
    dst.write_bytes(b"the old copy")
    real = cli_fs.shutil.copyfileobj

    def half_then_fail(s: Any, d: Any, length: int = 0) -> None:
        d.write(s.read(1000))
        raise OSError("connection reset")

    monkeypatch.setattr(cli_fs.shutil, "copyfileobj", half_then_fail)
    assert main(["cp", src, f"file://{dst}"]) == 2  # the CLI: one line, no traceback
    assert "connection reset" in capsys.readouterr().err
    assert dst.read_bytes() == b"the old copy" and os.listdir(tmp_path / "dst") == ["obj"]
    monkeypatch.setattr(cli_fs.shutil, "copyfileobj", real)
    assert main(["cp", src, f"file://{dst}"]) == 0
    assert dst.read_bytes() == efs.target.cat_file(path)
    efs.target.rm(path)


# ---------------------------------------------------------------- 11. objects cut off inside their header


@pytest.mark.parametrize("where", ["memory", "local"])
def test_an_object_cut_inside_its_header_is_a_malformed_header(where: str, tmp_path: Path) -> None:
    from envcrypt import IntegrityError, MalformedHeaderError

    if where == "memory":
        fs, _ = memory_envcrypt()
        base = "/cut"
    else:
        fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
        base = str(tmp_path / "cut")
        os.mkdir(base)
    fs.pipe_file(f"{base}/whole", b"w" * 1000)
    stored = fs.target.cat_file(f"{base}/whole")
    header_size = envcrypt.inspect(stored).header_size
    fs.target.pipe_file(f"{base}/in-header", stored[: header_size - 5])
    fs.target.pipe_file(f"{base}/in-fixed-part", stored[:20])
    fs.target.pipe_file(f"{base}/in-body", stored[: header_size + 30])
    for name in ("in-header", "in-fixed-part"):
        with pytest.raises(MalformedHeaderError):
            fs.cat_file(f"{base}/{name}")
    with pytest.raises(IntegrityError):
        fs.cat_file(f"{base}/in-body")
    entries = {e["name"].rsplit("/", 1)[-1]: e for e in fs.ls(base, detail=True)}  # the listing does not fail
    assert entries["whole"]["size"] == 1000 and "error" not in entries["whole"]
    assert entries["in-header"]["error"] == "MalformedHeaderError"
    assert entries["in-header"]["size"] == header_size - 5
    assert entries["in-fixed-part"]["error"] == "MalformedHeaderError" and entries["in-fixed-part"]["size"] == 20
    assert entries["in-body"]["error"] == "IntegrityError"
    assert fs.info(f"{base}/in-header")["error"] == "MalformedHeaderError"


# ---------------------------------------------------------------- 12. random access on the local and zero-copy paths


def _reader_paths(directory: Path) -> tuple[bytes, dict[str, tuple[EnvcryptFileSystem, str]]]:
    """One object per read path: local (os.pread) and plain MemoryFileSystem (zero-copy views)."""
    import uuid

    from fsspec.implementations.memory import MemoryFileSystem

    from envcrypt.format import CHUNK_SIZE

    data = os.urandom(5 * CHUNK_SIZE + 321)
    local = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
    path = str(directory / "obj")
    local.pipe_file(path, data)
    memory = EnvcryptFileSystem(fs=MemoryFileSystem(skip_instance_cache=True), key_uri="local:default",
                                skip_instance_cache=True)
    mpath = f"/prop-{uuid.uuid4().hex}/obj"
    memory.pipe_file(mpath, data)
    return data, {"local": (local, path), "memory": (memory, mpath)}


def test_random_reads_on_local_and_zero_copy_memory_paths(tmp_path: Path) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from envcrypt.format import CHUNK_SIZE

    data, read_paths = _reader_paths(tmp_path)
    local_fs, local_path = read_paths["local"]
    memory_fs, memory_path = read_paths["memory"]
    with local_fs.open(local_path) as f:
        assert f._local and f.read(10) == data[:10]
    with memory_fs.open(memory_path) as f:
        assert f._memory and f.read(10) == data[:10]
    bound = 6 * CHUNK_SIZE

    @settings(max_examples=80, deadline=None)
    @given(where=st.sampled_from(["local", "memory"]),
           reads=st.lists(st.tuples(st.integers(0, bound), st.integers(0, 3 * CHUNK_SIZE)), min_size=1, max_size=5))
    def check(where: str, reads: list[tuple[int, int]]) -> None:
        fs, path = read_paths[where]
        with fs.open(path) as f:
            for start, length in reads:  # seeks and reads on one file: kept edge chunks reused
                f.seek(start)
                assert f.read(length) == data[start : start + length]
                assert f.tell() == min(start + length, len(data)) or start > len(data)
        for start, length in reads:
            assert fs.cat_file(path, start, start + length) == data[start : start + length]

    check()


def test_cross_store_cli_copy_takes_the_destination_policys_key(tmp_path: Path) -> None:
    import json
    import uuid

    import fsspec

    from envcrypt.cli import main

    make_key("tenant-b")
    src = f"memory://cp-{uuid.uuid4().hex[:8]}/obj"
    efs, path = fsspec.core.url_to_fs("envcrypt::" + src)
    data = os.urandom(50_000)
    efs.pipe_file(path, data)
    (tmp_path / "lake" / "b").mkdir(parents=True)
    options = json.dumps({"envcrypt": {"key_policy": {f"file://{tmp_path}/lake/b/": "local:tenant-b"}}})
    assert main(["cp", src, f"file://{tmp_path}/lake/b/obj", "-o", options]) == 0
    assert main(["cp", src, f"file://{tmp_path}/lake/plain-copy", "-o", options]) == 0
    copied = (tmp_path / "lake" / "b" / "obj").read_bytes()
    assert envcrypt.inspect(copied).key_uris == ["local:tenant-b/1"]
    assert (tmp_path / "lake" / "plain-copy").read_bytes() == efs.target.cat_file(path)  # no rule: as it is
    assert envcrypt.decrypt(copied, trusted_keys="local:tenant-b") == data
    efs.target.rm(path)


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
