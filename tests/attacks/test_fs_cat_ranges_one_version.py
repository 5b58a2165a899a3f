"""One ``cat_ranges`` call answers each object from one version of it.

A storage writer who puts back another genuine version of an object between
two of the span requests of one ``cat_ranges`` call must not get an answer
that joins ranges of both (a Parquet footer of one version with the column
chunks of another): when a range fails to authenticate, every range of that
object is read again from a fresh head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsspec.implementations.memory import MemoryFileSystem

from envcrypt.format import CHUNK_SIZE
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.vault import LocalVault

N = 40 * CHUNK_SIZE


class SwappingStore(MemoryFileSystem):  # type: ignore[misc]
    """An object store whose first ranged GET of a call is answered before the writer swaps."""

    protocol = "swapping-memory"
    swap: bytes | None = None

    def cat_ranges(self, paths: list[str], starts: list[int], ends: list[int], max_gap: Any = None,
                   on_error: str = "return", **kwargs: Any) -> list[Any]:
        out = []
        for path, start, end in zip(paths, starts, ends, strict=True):
            out.append(self.cat_file(path, start, end))
            if self.swap is not None and len(paths) > 1:
                self.store[path] = self.swap  # the storage writer replaces the object between two GETs
                self.swap = None
        return out


def test_ranges_of_one_object_come_from_one_version(_isolated_vault: Path) -> None:
    LocalVault(_isolated_vault).create_key("t")
    target = SwappingStore(skip_instance_cache=True)
    target.store.clear()
    fs = EnvcryptFileSystem(fs=target, key_uri="local:t", skip_instance_cache=True)
    fs.pipe_file("/obj", b"A" * N)
    (stored,) = target.store
    first = target.store[stored]
    fs.pipe_file("/obj", b"B" * N)
    target.store[stored], target.swap = first, target.store[stored]
    got = fs.cat_ranges(["/obj", "/obj"], [0, N - 16], [16, N])
    assert got in ([b"A" * 16] * 2, [b"B" * 16] * 2), got
