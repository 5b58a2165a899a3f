"""Helpers shared by the fs tests: memory and local filesystems that record what they serve."""

from __future__ import annotations

from typing import Any

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from envcrypt.fs import EnvcryptFileSystem


class RecordingMemoryFileSystem(MemoryFileSystem):
    """A real in-memory filesystem (own store) that records ranged reads and range batches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, global_store=False, **kwargs)
        self.reads: list[tuple[str, int | None, int | None]] = []
        self.range_batches = 0

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        self.reads.append((path, start, end))
        return bytes(super().cat_file(path, start=start, end=end, **kwargs))

    def cat_ranges(self, paths: Any, starts: Any, ends: Any, **kwargs: Any) -> Any:
        self.range_batches += 1
        return super().cat_ranges(paths, starts, ends, **kwargs)

    def fetched(self) -> int:
        total = 0
        for path, start, end in self.reads:
            size = self.store[path].size if path in self.store else 0
            total += (size if end is None else min(end, size)) - (start or 0)
        return total


class CountingLocalFileSystem(LocalFileSystem):
    """A real local filesystem that counts head probes (``cat_ranges`` batches)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.range_batches = 0

    def cat_ranges(self, paths: Any, starts: Any, ends: Any, **kwargs: Any) -> Any:
        self.range_batches += 1
        return super().cat_ranges(paths, starts, ends, **kwargs)


def memory_envcrypt(**options: Any) -> tuple[EnvcryptFileSystem, RecordingMemoryFileSystem]:
    target = RecordingMemoryFileSystem(skip_instance_cache=True)
    return EnvcryptFileSystem(fs=target, skip_instance_cache=True, **options), target


def make_key(name: str, kind: str = "aes256") -> str:
    """Create a key in the test's vault (``$ENVCRYPT_VAULT``); return its key URI."""
    from envcrypt.keys.vault import LocalVault

    LocalVault().create_key(name, kind)
    return f"local:{name}"
