"""The head cache of the envcrypt filesystem (envcrypt/fs/_heads.py): a head is re-read when the
stored object changes, whatever its mtime says, and a header cut short is reported, not guessed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import envcrypt
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._heads import HEADS

from .fs_helpers import CountingLocalFileSystem, memory_envcrypt


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
