"""Regression tests for review findings on the envcrypt filesystem (stale heads, policy anchoring, atomicity...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def test_in_place_rewrite_with_restored_mtime_is_seen(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
    path = str(tmp_path / "x")
    fs.pipe_file(path, b"A" * 100)
    before = os.stat(path)
    assert fs.info(path)["size"] == 100 and fs.cat_file(path) == b"A" * 100  # head cached
    blob = envcrypt.encrypt(b"B" * 100, "local:default")
    assert len(blob) == before.st_size
    with open(path, "r+b") as f:  # rewritten in place, same inode, same size, mtime put back (cp -p, rsync -t)
        f.write(blob)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_ino == before.st_ino
    assert fs.cat_file(path) == b"B" * 100


def test_plaintext_allow_never_serves_ciphertext_from_a_stale_head(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(key_uri="local:default", plaintext="allow", skip_instance_cache=True)
    blob = envcrypt.encrypt(b"B" * 100, "local:default")
    path = tmp_path / "y"
    path.write_bytes(b"P" * len(blob))
    before = os.stat(path)
    assert fs.cat_file(str(path)) == b"P" * len(blob)
    with open(path, "r+b") as f:
        f.write(blob)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
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
        target.pipe_file("/m/x", _rewrapped(stored, [make_key("a-longer-key-name-than-default")]))
        assert f.read() == data
        assert f.size == len(data)
