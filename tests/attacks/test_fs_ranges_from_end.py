"""A range counted from the end is an offset only once the object's length is proven.

A storage writer who cuts whole sealed chunks out of an object (or appends
some) changes the length its stored size implies; ``cat_file(p, 0, -16)`` must
not then return a shorter (or shifted) run of genuine bytes as success.  Such a
range takes the final chunk, whose tag authenticates the length.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from envcrypt.errors import IntegrityError
from envcrypt.format import CHUNK_SIZE
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.vault import LocalVault

SEALED = CHUNK_SIZE + 16
DATA = b"".join(b"%016d" % i for i in range(4 * CHUNK_SIZE // 16)) + b"TAIL-RECORD-0042"  # 4 chunks + 16 bytes
RANGES = [(-16, None), (0, -16), (-48, -16), (None, -1), (-CHUNK_SIZE - 5, -3), (100, -100)]


@pytest.fixture
def ledger(_isolated_vault: Path, tmp_path: Path) -> tuple[EnvcryptFileSystem, str]:
    LocalVault(_isolated_vault).create_key("t")
    fs = EnvcryptFileSystem(target_protocol="file", key_uri="local:t", skip_instance_cache=True)
    path = f"{tmp_path}/ledger.bin"
    fs.pipe_file(path, DATA)
    return fs, path


def test_ranges_from_the_end_of_a_genuine_object(ledger: tuple[EnvcryptFileSystem, str]) -> None:
    fs, path = ledger
    for start, end in RANGES:
        assert fs.cat_file(path, start, end) == DATA[start:end], (start, end)
    got = fs.cat_ranges([path] * len(RANGES), [s for s, _ in RANGES], [e for _, e in RANGES])
    assert got == [DATA[s:e] for s, e in RANGES]


@pytest.mark.parametrize("edit", ["cut the last full chunk", "append a copy of a chunk"])
def test_ranges_from_the_end_of_a_shortened_or_lengthened_object_fail(
        ledger: tuple[EnvcryptFileSystem, str], edit: str) -> None:
    fs, path = ledger
    stored = Path(path).read_bytes()
    final = len(stored) - (16 + 16)  # the final chunk: 16 bytes of plaintext and its tag
    if edit.startswith("cut"):
        forged = stored[: final - SEALED] + stored[final:]
    else:
        forged = stored[:final] + stored[final - SEALED : final] + stored[final:]
    Path(path).write_bytes(forged)
    fs.invalidate_written(path)
    for start, end in RANGES:
        with pytest.raises(IntegrityError):
            fs.cat_file(path, start, end)
    results = fs.cat_ranges([path] * len(RANGES), [s for s, _ in RANGES], [e for _, e in RANGES], on_error="return")
    assert all(isinstance(r, IntegrityError) for r in results), results
