"""The envcrypt filesystem's file objects (envcrypt/fs/_files.py): one object version per open
file, and random reads on the local (pread) and zero-copy memory paths."""

from __future__ import annotations

import os
from pathlib import Path

from envcrypt.fs import EnvcryptFileSystem

from .fs_helpers import memory_envcrypt


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
