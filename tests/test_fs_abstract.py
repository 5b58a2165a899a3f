"""fsspec's shared abstract test suite over ``envcrypt::memory://``.

The suite writes, copies, moves, puts and gets files through the envcrypt
filesystem and compares contents; on top of it we check that what the memory
store holds is ciphertext.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec
import fsspec.tests.abstract as abstract
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from envcrypt.fs import EnvcryptFileSystem


class EnvcryptMemoryFixtures(abstract.AbstractFixtures):
    @pytest.fixture
    def fs(self) -> Iterator[EnvcryptFileSystem]:
        target = MemoryFileSystem(global_store=False, skip_instance_cache=True)
        fs = EnvcryptFileSystem(fs=target, skip_instance_cache=True)
        yield fs
        for path, stored in target.store.items():
            assert stored.getvalue()[:8] == b"ENVCRYPT", path

    @pytest.fixture
    def fs_join(self) -> Any:
        return lambda *args: "/".join(args)

    @pytest.fixture
    def fs_path(self) -> str:
        return "/abstract"


class TestEnvcryptCopy(abstract.AbstractCopyTests, EnvcryptMemoryFixtures):
    pass


class TestEnvcryptGet(abstract.AbstractGetTests, EnvcryptMemoryFixtures):
    pass


class TestEnvcryptPut(abstract.AbstractPutTests, EnvcryptMemoryFixtures):
    pass


class TestEnvcryptPipe(abstract.AbstractPipeTests, EnvcryptMemoryFixtures):
    pass


class TestEnvcryptOpen(abstract.AbstractOpenTests, EnvcryptMemoryFixtures):
    pass


def test_registered_protocol() -> None:
    assert fsspec.get_filesystem_class("envcrypt") is EnvcryptFileSystem
