"""A read of a few bytes inside one chunk (``cat_file`` with a small range, memory and local
targets: the fast path that reads and opens that chunk alone) authenticates the whole chunk:
a storage writer who edits bytes of the chunk *outside* the requested range, moves another
chunk of the same object into its place, or stretches the object so that the chunk is no
longer the final one, gets an IntegrityError, never the requested bytes served from an
unauthenticated chunk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from envcrypt.errors import IntegrityError
from envcrypt.format import BODY_PREFIX_SIZE, CHUNK_SIZE, SEALED_CHUNK_SIZE, parse_header
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._heads import HEADS

PLAIN = os.urandom(3 * CHUNK_SIZE + 5000)


@pytest.fixture(params=["file", "memory"])
def victim(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EnvcryptFileSystem, str, bytes]]:
    if request.param == "memory":
        target = MemoryFileSystem(skip_instance_cache=True)
        target.store, target.pseudo_dirs = {}, [""]
    else:
        target = fsspec.filesystem("file")
    fs = EnvcryptFileSystem(fs=target, skip_instance_cache=True)
    path = str(tmp_path / "victim.bin")
    fs.pipe_file(path, PLAIN)
    assert fs.cat_file(path, CHUNK_SIZE + 10, CHUNK_SIZE + 20) == PLAIN[CHUNK_SIZE + 10 : CHUNK_SIZE + 20]
    yield fs, path, bytes(target.cat_file(path))
    HEADS.clear()


def _store(fs: EnvcryptFileSystem, path: str, blob: bytes) -> None:
    fs.target.pipe_file(path, blob)
    fs.invalidate_cache()


def _chunk_offset(blob: bytes, index: int) -> int:
    return parse_header(blob)[1] + BODY_PREFIX_SIZE + index * SEALED_CHUNK_SIZE


@pytest.mark.parametrize("offset", [0, 9, 500, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 15])
def test_an_edit_outside_the_range_but_inside_its_chunk_fails(victim: tuple[EnvcryptFileSystem, str, bytes],
                                                              offset: int) -> None:
    fs, path, blob = victim
    edited = bytearray(blob)
    edited[_chunk_offset(blob, 1) + offset] ^= 0x40  # chunk 1, outside [10, 20) of it (or its tag)
    _store(fs, path, bytes(edited))
    with pytest.raises(IntegrityError):
        fs.cat_file(path, CHUNK_SIZE + 10, CHUNK_SIZE + 20)
    assert fs.cat_file(path, 10, 20) == PLAIN[10:20]  # chunk 0 untouched: still served, exactly


def test_another_chunk_of_the_same_object_in_its_place_fails(victim: tuple[EnvcryptFileSystem, str, bytes]) -> None:
    fs, path, blob = victim
    one, two = _chunk_offset(blob, 1), _chunk_offset(blob, 2)
    _store(fs, path, blob[:one] + blob[two : two + SEALED_CHUNK_SIZE] + blob[two:])
    with pytest.raises(IntegrityError):
        fs.cat_file(path, CHUNK_SIZE + 10, CHUNK_SIZE + 20)


def test_a_final_chunk_out_of_place_fails(victim: tuple[EnvcryptFileSystem, str, bytes]) -> None:
    fs, path, blob = victim
    final = _chunk_offset(blob, 3)
    # a full chunk appended after the short final one: the stored size now says chunk 3 is a
    # full middle chunk (and chunk 4 the final one)
    _store(fs, path, blob + blob[_chunk_offset(blob, 0) : _chunk_offset(blob, 1)])
    with pytest.raises(IntegrityError):
        fs.cat_file(path, 3 * CHUNK_SIZE + 10, 3 * CHUNK_SIZE + 20)
    # cut 16 bytes into the final chunk: the stored size now says the object ends with an
    # empty final chunk 3, whose "tag" is the first 16 sealed bytes of the real one
    _store(fs, path, blob[: final + 16])
    with pytest.raises(IntegrityError):
        fs.cat_file(path, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE)  # an empty range still opens its chunk
    with pytest.raises(IntegrityError):
        fs.cat_file(path, -5, None)
