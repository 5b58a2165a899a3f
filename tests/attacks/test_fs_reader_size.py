"""Issue 7, item 8: the fsspec reader answers size, seek-from-end and read-at-EOF only from an
authenticated length, and a reader that raised an integrity error keeps raising.

The attacker appends one whole sealed chunk's worth of bytes (16,400) to a stored object:
the stored size then implies 16,384 more plaintext bytes, and a reader that trusted it
would report a wrong size and return b"" at the (wrong) end.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import pytest

from envcrypt.errors import IntegrityError
from envcrypt.format import CHUNK_SIZE, SEALED_CHUNK_SIZE

from ..fs_helpers import memory_envcrypt

DATA = os.urandom(3 * CHUNK_SIZE + 1000)


def _extended(kind: str) -> tuple[Any, str]:
    fs, target = memory_envcrypt()
    fs.pipe_file("/x", DATA)
    stored = target.cat_file("/x")
    tail = os.urandom(SEALED_CHUNK_SIZE) if kind == "random" else stored[-SEALED_CHUNK_SIZE:]
    target.pipe_file("/x", stored + tail)  # a storage write
    fs.invalidate_cache()
    return fs, "/x"


USES: dict[str, Callable[[Any], Any]] = {
    "size": lambda f: f.size,
    "seek from the end": lambda f: f.seek(-10, io.SEEK_END),
    "read all": lambda f: f.read(),
    "read at the claimed end": lambda f: (f.seek(len(DATA) + CHUNK_SIZE - 5), f.read(100))[1],
    "read past the true end": lambda f: (f.seek(len(DATA) - 10), f.read(100))[1],
}


@pytest.mark.parametrize("kind", ["random", "a copy of the final chunk"])
@pytest.mark.parametrize("use", list(USES))
def test_a_length_from_appended_bytes_is_never_used(kind: str, use: str) -> None:
    fs, path = _extended(kind)
    with fs.open(path, "rb") as f:
        with pytest.raises(IntegrityError):
            USES[use](f)
        # sticky: a later read of an untouched range fails too (the seek to it already does)
        with pytest.raises(IntegrityError):
            f.seek(0)
            f.read(100)
        with pytest.raises(IntegrityError):
            f.read_range(0, 100)
    with pytest.raises(IntegrityError):
        fs.cat_file(path)


def test_an_honest_object_reads_and_its_size_is_authenticated_once() -> None:
    fs, target = memory_envcrypt()
    fs.pipe_file("/ok", DATA)
    with fs.open("/ok", "rb") as f:
        target.reads.clear()
        assert f.size == len(DATA)
        assert len(target.reads) == 1  # the final chunk, once
        assert f.size == len(DATA) and len(target.reads) == 1
        assert f.seek(-10, io.SEEK_END) == len(DATA) - 10 and f.read() == DATA[-10:]
        assert f.read() == b""
