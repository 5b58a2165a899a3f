"""Hostile storage read through the filesystem layer (not only the core): a storage writer
flips bits, truncates, swaps, duplicates, drops, splices and appends chunks, edits key slots
and downgrades the version or suite.  Whatever the read path (``fs.open``, ``cat_file`` with
ranges, ``cat_ranges``, pandas, pyarrow), the caller gets a typed ``envcrypt.errors`` class
(not swallowed, not a short read, not an ``OSError``), or, for a ranged read of chunks the
attack did not touch, exactly the true bytes."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from envcrypt.errors import EnvcryptError
from envcrypt.format import BODY_PREFIX_SIZE, CHUNK_SIZE, SEALED_CHUNK_SIZE, parse_header
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.vault import LocalVault

pytestmark = pytest.mark.timeout(120)

PLAIN = os.urandom(3 * CHUNK_SIZE + 5000)  # three full chunks and a short final one
TAG = 16


class _Raw:
    """Writes stored bytes as the attacker does, on a local disk or an in-memory store
    (the two targets whose readers take different paths: positional reads, buffer views)."""

    def __init__(self, target: fsspec.AbstractFileSystem, root: Path) -> None:
        self.target, self.root = target, root

    def write_bytes(self, data: bytes, name: str = "victim.bin") -> None:
        self.target.pipe_file(str(self.root / name), data)

    def read_bytes(self, name: str) -> bytes:
        return bytes(self.target.cat_file(str(self.root / name)))

    def __truediv__(self, name: str) -> _Path:
        return _Path(self, name)


class _Path:
    def __init__(self, raw: _Raw, name: str) -> None:
        self.raw, self.name = raw, name

    def write_bytes(self, data: bytes) -> None:
        self.raw.write_bytes(data, self.name)

    def __str__(self) -> str:
        return str(self.raw.root / self.name)


@pytest.fixture(params=["file", "memory"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EnvcryptFileSystem, _Raw, bytes, bytes]]:
    """A filesystem with the DEK cache on (so two objects share a DEK), an object and a sibling
    sealed under the same DEK."""
    LocalVault().create_key("k")
    if request.param == "memory":
        target = MemoryFileSystem(skip_instance_cache=True)
        target.store, target.pseudo_dirs = {}, [""]
    else:
        target = fsspec.filesystem("file")
    fs = EnvcryptFileSystem(fs=target, key_uri="local:k", resolver_options={"dek_cache": True},
                            skip_instance_cache=True)
    raw = _Raw(target, tmp_path)
    fs.pipe_file(str(tmp_path / "a.bin"), PLAIN)
    fs.pipe_file(str(tmp_path / "sibling.bin"), bytes(reversed(PLAIN)))
    a, sibling = raw.read_bytes("a.bin"), raw.read_bytes("sibling.bin")
    assert parse_header(a)[0].key_slots == parse_header(sibling)[0].key_slots  # one DEK, one slot
    yield fs, raw, a, sibling


def _body(blob: bytes) -> int:
    return parse_header(blob)[1] + BODY_PREFIX_SIZE


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    start = _body(blob)
    return blob[:start], [blob[i:i + SEALED_CHUNK_SIZE] for i in range(start, len(blob), SEALED_CHUNK_SIZE)]


def mutations(a: bytes, sibling: bytes, header_bits: bool = True) -> Iterator[tuple[str, bytes]]:
    header_size = parse_header(a)[1]
    head, chunks = _chunks(a)
    _, other = _chunks(sibling)
    for bit in range((header_size + BODY_PREFIX_SIZE) * 8 if header_bits else 0):  # header, salt, commitment
        yield f"flip header bit {bit}", _flip(a, bit)
    for k, chunk in enumerate(chunks):  # in each chunk: every bit of its first, middle and tag bytes
        base = len(head) + k * SEALED_CHUNK_SIZE
        for offset in (0, len(chunk) // 2, len(chunk) - TAG, len(chunk) - 1):
            for bit in range(8):
                yield f"flip chunk {k} byte {offset} bit {bit}", _flip(a, (base + offset) * 8 + bit)
    for k in range(len(chunks) + 1):  # truncation at and around every chunk boundary
        boundary = len(head) + k * SEALED_CHUNK_SIZE
        for cut in (boundary - 1, boundary, boundary + 1):
            if 0 < cut < len(a):
                yield f"truncate at {cut}", a[:cut]
    for cut in (1, 8, 12, header_size - 1, header_size, header_size + 20):
        yield f"truncate at {cut}", a[:cut]
    yield "swap chunks 0 and 1", head + chunks[1] + chunks[0] + b"".join(chunks[2:])
    yield "swap chunks 2 and 3 (the final one)", head + b"".join(chunks[:2]) + chunks[3] + chunks[2]
    yield "duplicate chunk 0", head + chunks[0] + b"".join(chunks)
    yield "duplicate chunk 1 over chunk 2", head + chunks[0] + chunks[1] + chunks[1] + chunks[3]
    yield "drop chunk 1", head + chunks[0] + b"".join(chunks[2:])
    yield "drop the final chunk", head + b"".join(chunks[:3])
    for k in range(len(chunks)):  # spliced from another object sealed under the same DEK
        yield f"chunk {k} spliced from a sibling", head + b"".join(other[k] if j == k else c
                                                                   for j, c in enumerate(chunks))
    yield "append one byte", a + b"\0"
    yield "append a sealed chunk of its own", a + chunks[0]
    yield "append a tag", a + chunks[-1][-TAG:]
    slot = a.index(b"local:k")
    for name, edited in (("slot names another key", b"local:x"), ("slot names an unknown scheme", b"zzzzz:k")):
        yield name, a[:slot] + edited + a[slot + len(edited):]
    wrapped_end = header_size - 1
    yield "wrapped DEK edited", a[:wrapped_end] + bytes([a[wrapped_end] ^ 1]) + a[wrapped_end + 1:]
    for version in (0, 2, 255):
        yield f"format version {version}", a[:8] + bytes([version]) + a[9:]
    for suite in (0, 2, 255):
        yield f"suite {suite}", a[:9] + bytes([suite]) + a[10:]


def _flip(blob: bytes, bit: int) -> bytes:
    out = bytearray(blob)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


RANGES = [(0, 100), (CHUNK_SIZE + 5, CHUNK_SIZE + 900), (2 * CHUNK_SIZE - 10, 2 * CHUNK_SIZE + 10),
          (len(PLAIN) - 50, len(PLAIN))]


def _whole(fs: EnvcryptFileSystem, path: str) -> bytes:
    with fs.open(path, "rb") as f:
        return bytes(f.read())


def _seek_end(fs: EnvcryptFileSystem, path: str) -> bytes:
    with fs.open(path, "rb") as f:
        f.seek(-100, 2)
        return bytes(f.read())


def _typed_or_true(read: Callable[[], object], expected: object, what: str) -> None:
    try:
        got = read()
    except EnvcryptError:
        return
    except Exception as exc:  # anything else is a failure of this test
        raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if isinstance(got, list):  # cat_ranges: an error returned in place must be typed too
        for item, want in zip(got, expected, strict=True):  # type: ignore[call-overload]
            assert isinstance(item, EnvcryptError) or item == want, what
        return
    assert got == expected, f"{what}: wrong bytes returned as success"


def test_every_mutation_fails_typed_through_every_read_path(
        lake: tuple[EnvcryptFileSystem, _Raw, bytes, bytes]) -> None:
    fs, root, a, sibling = lake
    target = root / "victim.bin"
    path = str(target)
    seen, accepted = 0, set()
    # every header bit on one target (the memory one: cheap); the header is read by the same
    # code on both, the chunks by different code (buffer views / positional reads)
    every_header_bit = isinstance(fs.target, MemoryFileSystem)
    for what, blob in mutations(a, sibling, header_bits=every_header_bit):
        target.write_bytes(blob)
        fs.invalidate_cache()
        header_bit = what.startswith("flip header bit")  # 1,000+ of them: fewer paths each
        whole = (_whole,) if header_bit else (_whole, lambda fs, p: fs.cat_file(p))
        for reader in whole:  # whole reads fail, or are the true bytes
            try:
                got = reader(fs, path)
            except EnvcryptError:
                continue
            except Exception as exc:
                raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
            assert got == PLAIN, f"{what}: wrong bytes returned as success"
            accepted.add(what)
        if not header_bit:
            _typed_or_true(lambda: _seek_end(fs, path), PLAIN[-100:], what)
        for start, end in RANGES[1:2] if header_bit else RANGES:
            _typed_or_true(lambda s=start, e=end: fs.cat_file(path, s, e), PLAIN[start:end], f"{what} [{start}:{end}]")
        _typed_or_true(lambda: fs.cat_ranges([path] * len(RANGES), [s for s, _ in RANGES], [e for _, e in RANGES]),
                       [PLAIN[s:e] for s, e in RANGES], f"{what} cat_ranges")
        seen += 1
    assert seen > (1200 if every_header_bit else 150)
    # the only edits that still open: the case of the slot's URI scheme (schemes are
    # case-insensitive, RFC 3986): the same trusted key, the same authenticated bytes
    scheme = a.index(b"local:k")
    assert accepted == ({f"flip header bit {(scheme + i) * 8 + 5}" for i in range(5)} if every_header_bit else set())


def test_a_whole_sibling_under_the_same_dek_reads_as_the_sibling_never_a_mix(
        lake: tuple[EnvcryptFileSystem, _Raw, bytes, bytes]) -> None:
    """A whole object swapped for another under the same key is the stated limit of per-object
    encryption (SECURITY.md; the signed manifest detects it): with one cached DEK, the
    sibling's salt and body under this header *is* the sibling, and reads as it, whole.
    Any splice of parts of the two fails (above)."""
    fs, root, a, sibling = lake
    header_size = parse_header(a)[1]
    (root / "v.bin").write_bytes(a[:header_size] + sibling[header_size:])
    assert fs.cat_file(str(root / "v.bin")) == bytes(reversed(PLAIN))
    (root / "v.bin").write_bytes(a[:header_size + BODY_PREFIX_SIZE] + sibling[header_size + BODY_PREFIX_SIZE:])
    with pytest.raises(EnvcryptError):  # this salt and commitment, the sibling's chunks
        fs.cat_file(str(root / "v.bin"))


def test_a_ranged_read_of_untouched_chunks_is_still_served_and_exact(
        lake: tuple[EnvcryptFileSystem, _Raw, bytes, bytes]) -> None:
    """The flip side of random access (and why ranged reads above may succeed): a chunk the
    attack did not touch opens, and only its true bytes come back."""
    fs, root, a, _ = lake
    head, chunks = _chunks(a)
    (root / "v.bin").write_bytes(_flip(a, (len(head) + 3 * SEALED_CHUNK_SIZE + 10) * 8))  # final chunk
    assert fs.cat_file(str(root / "v.bin"), CHUNK_SIZE, CHUNK_SIZE + 10) == PLAIN[CHUNK_SIZE:CHUNK_SIZE + 10]
    with pytest.raises(EnvcryptError):
        fs.cat_file(str(root / "v.bin"), 0, len(PLAIN))  # reaching the end authenticates the length


# ---------------------------------------------------------------- pandas and pyarrow


@pytest.fixture
def parquet_lake(tmp_path: Path) -> tuple[EnvcryptFileSystem, Path, bytes]:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    LocalVault().create_key("k")
    fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k", skip_instance_cache=True)
    frame = pd.DataFrame({"n": range(20_000), "s": [f"row {i}" for i in range(20_000)]})
    with fs.open(str(tmp_path / "t.parquet"), "wb") as f:
        frame.to_parquet(f, compression=None)
    return fs, tmp_path, (tmp_path / "t.parquet").read_bytes()


def _parquet_mutations(blob: bytes) -> Iterator[tuple[str, bytes]]:
    head, chunks = _chunks(blob)
    header_size = parse_header(blob)[1]
    yield "flip in the header", _flip(blob, 9 * 8 + 1)
    yield "flip in the commitment", _flip(blob, (header_size + 30) * 8)
    yield "flip in the first chunk", _flip(blob, (len(head) + 100) * 8)
    yield "flip in the footer (final chunk)", _flip(blob, (len(blob) - 40) * 8)
    yield "truncated at a chunk boundary", blob[: len(head) + (len(chunks) - 1) * SEALED_CHUNK_SIZE]
    yield "appended bytes", blob + b"PAR1"
    yield "chunks swapped", head + chunks[1] + chunks[0] + b"".join(chunks[2:])
    yield "version downgraded", blob[:8] + b"\0" + blob[9:]
    slot = blob.index(b"local:k")
    yield "slot edited", blob[:slot] + b"local:x" + blob[slot + 7:]


def test_pandas_and_pyarrow_get_the_typed_error(parquet_lake: tuple[EnvcryptFileSystem, Path, bytes]) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    fs, root, blob = parquet_lake
    path = root / "victim.parquet"
    for what, bad in _parquet_mutations(blob):
        path.write_bytes(bad)
        fs.invalidate_cache()
        readers = {
            "pandas": lambda: pd.read_parquet(f"envcrypt::file://{path}", storage_options={
                "envcrypt": {"key_uri": "local:k"}}),
            "pyarrow": lambda: pq.read_table(str(path), filesystem=fs),
            "pyarrow column": lambda: _read_column(fs, str(path)),
        }
        for name, read in readers.items():
            try:
                read()
            except EnvcryptError as exc:
                # pyarrow keeps the error (and so its frames, which hold our file) where the
                # garbage collector cannot see: drop the frames, or the file outlives the test
                # (test_fs_teardown waits for every file pyarrow's threads used)
                exc.__traceback__ = None
            else:
                raise AssertionError(f"{what} via {name}: read succeeded")
    gc.collect()


def _read_column(fs: EnvcryptFileSystem, path: str) -> object:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f, pq.ParquetFile(f) as parquet:
        return parquet.read(columns=["n"])
