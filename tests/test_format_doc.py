"""FORMAT.md says what the code does: its size table and bounds match envcrypt.format."""

from __future__ import annotations

import re
from pathlib import Path

from envcrypt import format as fmt

DOC = (Path(__file__).resolve().parents[1] / "FORMAT.md").read_text()


def _size_table() -> list[list[int]]:
    section = DOC.split("| p | chunks | body_size |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        cells[0] = str(1 << 20) if cells[0] == "1 MiB" else cells[0]
        rows.append([int(c.replace(",", "")) for c in cells])
    return rows


def test_size_table_matches_code_both_ways() -> None:
    rows = _size_table()
    assert len(rows) >= 5
    for p, chunks, body, b, q, r in rows:
        assert fmt.chunk_count(p) == chunks
        assert fmt.body_size(p) == body
        assert body - fmt.BODY_PREFIX_SIZE == b
        assert divmod(b, fmt.SEALED_CHUNK_SIZE) == (q, r)
        assert fmt.plaintext_size(body) == p


def test_documented_bounds_match_constants() -> None:
    assert f"{fmt.MAX_HEADER_SIZE:,}" in DOC
    assert f"{fmt.MAX_CONTEXT_BLOCK_SIZE:,} bytes" in DOC
    assert f"{fmt.MAX_SLOTS} slots" in DOC
    assert re.search(r"`ENVCRYPT`", DOC) and fmt.MAGIC == b"ENVCRYPT"
