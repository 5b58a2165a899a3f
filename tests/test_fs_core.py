"""The envcrypt filesystem over memory and local targets: reads, writes, sizes, errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import fsspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envcrypt import IntegrityError, NotEncryptedError, inspect
from envcrypt.errors import UnpublishedWriteWarning, UntrustedKeyError
from envcrypt.format import CHUNK_SIZE, SEALED_CHUNK_SIZE, object_size
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._heads import HEADS

from .fs_helpers import make_key, memory_envcrypt

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5, 4 * CHUNK_SIZE]


def _payload(n: int) -> bytes:
    return (b"secret-row," * (n // 11 + 1))[:n]


@pytest.mark.parametrize("size", SIZES)
def test_roundtrip_ciphertext_and_exact_sizes(size: int) -> None:
    fs, target = memory_envcrypt()
    data = _payload(size)
    fs.pipe_file("/d/obj", data)
    stored = target.store["/d/obj"].getvalue()
    assert stored[:8] == b"ENVCRYPT" and (size < 11 or b"secret-row" not in stored)
    info = inspect(stored)
    assert len(stored) == object_size(info.header_size, size)
    assert fs.info("/d/obj")["size"] == size
    assert fs.info("/d/obj")["stored_size"] == len(stored)
    assert fs.ls("/d", detail=True)[0]["size"] == size
    assert fs.find("/d", detail=True)["/d/obj"]["size"] == size
    assert fs.du("/d") == size
    assert fs.cat_file("/d/obj") == data


@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from(SIZES[1:]), a=st.integers(0, 5 * CHUNK_SIZE), b=st.integers(0, 5 * CHUNK_SIZE))
def test_any_byte_range_equals_the_slice(size: int, a: int, b: int) -> None:
    fs, _ = memory_envcrypt()
    data = os.urandom(size)
    fs.pipe_file("/r", data)
    start, end = min(a, b), max(a, b)
    assert fs.cat_file("/r", start, end) == data[start:end]
    with fs.open("/r") as f:
        f.seek(start)
        assert f.read(end - start) == data[start:end]
        assert f.read(7) == data[end : end + 7]  # continues from the kept edge chunk


def test_one_ranged_read_per_fetch_and_no_over_fetch() -> None:
    fs, target = memory_envcrypt()
    data = os.urandom(40 * CHUNK_SIZE + 123)
    fs.pipe_file("/big", data)
    with fs.open("/big") as f:
        target.reads.clear()
        f.seek(20 * CHUNK_SIZE + 100)
        assert f.read(1000) == data[20 * CHUNK_SIZE + 100 : 20 * CHUNK_SIZE + 1100]
        assert len(target.reads) == 1
        assert target.fetched() == SEALED_CHUNK_SIZE  # one chunk holds those bytes
        target.reads.clear()
        f.seek(5 * CHUNK_SIZE - 10)
        assert f.read(3 * CHUNK_SIZE) == data[5 * CHUNK_SIZE - 10 : 8 * CHUNK_SIZE - 10]
        assert len(target.reads) == 1 and target.fetched() == 4 * SEALED_CHUNK_SIZE
        # small sequential reads inside a chunk are served from the kept chunk
        target.reads.clear()
        f.seek(30 * CHUNK_SIZE)
        for i in range(8):
            assert f.read(1024) == data[30 * CHUNK_SIZE + i * 1024 : 30 * CHUNK_SIZE + (i + 1) * 1024]
        assert target.fetched() == SEALED_CHUNK_SIZE


def test_reading_to_the_end_authenticates_the_length() -> None:
    fs, target = memory_envcrypt()
    fs.pipe_file("/t", os.urandom(2 * CHUNK_SIZE + 10))
    stored = bytearray(target.store["/t"].getvalue())
    stored[-3] ^= 1  # inside the final chunk's tag
    target.pipe_file("/t", bytes(stored))
    assert fs.cat_file("/t", 0, 100)  # earlier chunks still read
    with pytest.raises(IntegrityError):
        fs.cat_file("/t")
    with pytest.raises(IntegrityError):
        fs.cat_file("/t", 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 10)


def test_truncated_object_fails() -> None:
    fs, target = memory_envcrypt()
    fs.pipe_file("/t", os.urandom(3 * CHUNK_SIZE + 10))
    stored = target.store["/t"].getvalue()
    target.pipe_file("/t", stored[:-SEALED_CHUNK_SIZE])  # drops a whole chunk: a wrong final chunk
    with pytest.raises(IntegrityError):
        fs.cat_file("/t")


def test_exception_inside_with_leaves_nothing_on_memory() -> None:
    fs, target = memory_envcrypt()
    fs.pipe_file("/keep", b"old")
    with pytest.raises(RuntimeError):
        with fs.open("/new", "wb") as f:
            f.write(b"x" * 100_000)
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with fs.open("/keep", "wb") as f:
            f.write(b"new")
            raise RuntimeError("boom")
    assert not target.exists("/new")
    assert fs.cat_file("/keep") == b"old"


def test_local_writes_are_atomic(tmp_path: Path) -> None:
    fs = fsspec.filesystem("envcrypt", target_protocol="file", skip_instance_cache=True)
    path = str(tmp_path / "obj.bin")
    f = fs.open(path, "wb")
    f.write(b"a" * 50_000)
    assert not os.path.exists(path)  # nothing at the path before close
    f.close()
    assert open(path, "rb").read(8) == b"ENVCRYPT"
    with pytest.raises(ValueError):
        with fs.open(path, "wb") as f:
            f.write(b"b" * 100_000)
            raise ValueError("boom")
    assert fs.cat_file(path) == b"a" * 50_000
    assert sorted(os.listdir(tmp_path)) == ["obj.bin", "vault"]  # no temp file left


def test_text_mode_and_chained_url_options() -> None:
    url = "envcrypt::memory://textmode/notes.txt"
    make_key("notes")
    with fsspec.open(url, "wt", envcrypt={"key_uri": "local:notes"}) as f:
        f.write("line\n" * 10_000)
    with pytest.raises(UntrustedKeyError):  # a reader names the keys it accepts
        fsspec.open(url, "rt", envcrypt={"skip_instance_cache": True}).open()
    with fsspec.open(url, "rt", envcrypt={"trusted_keys": ["local:notes"]}) as f:
        assert f.readline() == "line\n"
        assert len(f.read()) == 5 * 9_999
    memory = fsspec.filesystem("memory")
    assert inspect(memory.cat_file("/textmode/notes.txt")).key_uris == ["local:notes/1"]
    fs, path = fsspec.core.url_to_fs(url)
    assert isinstance(fs, EnvcryptFileSystem) and path == "/textmode/notes.txt"
    assert fs.size(path) == 50_000
    memory.rm("/textmode", recursive=True)


def test_append_and_update_modes_raise() -> None:
    fs, _ = memory_envcrypt()
    fs.pipe_file("/a", b"x")
    for mode in ("ab", "r+b"):
        with pytest.raises(NotImplementedError, match="cannot be appended"):
            fs.open("/a", mode)


def test_not_encrypted_objects() -> None:
    fs, target = memory_envcrypt()
    target.pipe_file("/plain.csv", b"a,b\n1,2\n")
    with pytest.raises(NotEncryptedError):
        fs.cat_file("/plain.csv")
    info = fs.info("/plain.csv")
    assert info["encrypted"] is False and info["size"] == 8
    allow = EnvcryptFileSystem(fs=target, plaintext="allow", skip_instance_cache=True)
    assert allow.cat_file("/plain.csv") == b"a,b\n1,2\n"


def test_cp_copies_ciphertext_mv_and_rm() -> None:
    fs, target = memory_envcrypt()
    fs.pipe_file("/a/x", b"payload" * 1000)
    fs.cp_file("/a/x", "/a/y")
    assert target.cat_file("/a/x") == target.cat_file("/a/y")  # byte-identical ciphertext
    fs.mv("/a/y", "/b/z")
    assert fs.cat_file("/b/z") == b"payload" * 1000
    fs.rm("/b", recursive=True)
    assert not fs.exists("/b/z")
    assert fs.cat_ranges(["/a/x", "/a/x"], [0, 7], [7, 14]) == [b"payload", b"payload"]


def test_memory_heads_are_fetched_in_one_batch_and_never_stale() -> None:
    fs, target = memory_envcrypt()
    for i in range(5):
        fs.pipe_file(f"/c/{i}", b"z" * i)
    HEADS.clear()
    fs.ls("/c", detail=True)
    assert target.range_batches == 1  # every head in one batch
    assert [e["size"] for e in fs.ls("/c", detail=True)] == [0, 1, 2, 3, 4]
    fs.pipe_file("/c/3", b"longer" * 100)
    assert fs.info("/c/3")["size"] == 600


def test_pickle_carries_no_secret(_isolated_vault: Path) -> None:
    fs = EnvcryptFileSystem(
        target_protocol="memory", target_options={}, key_uri=make_key("pk"), skip_instance_cache=True
    )
    fs.pipe_file("/p/x", b"data")
    s3like = EnvcryptFileSystem(
        target_protocol="memory", target_options={"secret": "hunter2", "token": "t0k"},
        skip_instance_cache=True,
    )
    blob = pickle.dumps(fs) + pickle.dumps(s3like)
    master = (_isolated_vault / "master.key").read_bytes()
    assert master not in blob and b"hunter2" not in blob and b"t0k" not in blob
    assert pickle.loads(pickle.dumps(fs)).cat_file("/p/x") == b"data"
    kept = EnvcryptFileSystem(target_protocol="memory", target_options={}, pickle_credentials=True,
                              skip_instance_cache=True)
    assert pickle.loads(pickle.dumps(kept)).pickle_credentials


def _rewrapped(stored: bytes, key_uris: list[str]) -> bytes:
    """The same object with its key slots replaced (body byte-identical), as a rewrap does."""
    from envcrypt.format import parse_header
    from envcrypt.rewrap import rewrap_header

    _, size = parse_header(stored)
    return rewrap_header(stored, key_uris) + stored[size:]


def test_open_reader_survives_a_rewrap_with_a_longer_header() -> None:
    fs, target = memory_envcrypt()
    data = os.urandom(6 * CHUNK_SIZE)
    fs.pipe_file("/rot", data)
    with fs.open("/rot") as f:
        assert f.read(100) == data[:100]
        stored = target.cat_file("/rot")
        # a second slot under the same key: a longer header, the same body (as a rotation writes it)
        target.pipe_file("/rot", _rewrapped(stored, ["local:default", "local:default/1"]))
        f.seek(3 * CHUNK_SIZE)
        assert f.read(CHUNK_SIZE) == data[3 * CHUNK_SIZE : 4 * CHUNK_SIZE]
        assert f.read() == data[4 * CHUNK_SIZE :]
    assert fs.cat_file("/rot") == data


def test_open_reader_still_fails_on_a_different_object() -> None:
    fs, target = memory_envcrypt()
    fs.pipe_file("/swap", os.urandom(3 * CHUNK_SIZE))
    with fs.open("/swap") as f:
        f.read(10)
        fs.pipe_file("/swap", os.urandom(3 * CHUNK_SIZE))  # a new object: new salt, new DEK
        f.seek(2 * CHUNK_SIZE)
        with pytest.raises(IntegrityError):
            f.read(10)


def test_get_file_in_parallel_ranges_and_no_partial_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from envcrypt.fs import filesystem

    monkeypatch.setattr(filesystem, "GET_PART", 3 * CHUNK_SIZE + 100)  # ranges cut through chunks
    fs, target = memory_envcrypt()
    data = os.urandom(20 * CHUNK_SIZE + 5)
    fs.pipe_file("/g", data)
    fs.get_file("/g", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == data
    fs.pipe_file("/empty", b"")
    fs.get_file("/empty", str(tmp_path / "empty.bin"))
    assert (tmp_path / "empty.bin").read_bytes() == b""
    stored = bytearray(target.cat_file("/g"))
    stored[len(stored) // 2] ^= 1
    target.pipe_file("/g", bytes(stored))
    with pytest.raises(IntegrityError):
        fs.get_file("/g", str(tmp_path / "bad.bin"))
    assert not (tmp_path / "bad.bin").exists()


def test_text_writer_aborts_on_exception_and_target_secrets_are_not_pickled() -> None:
    fs, target = memory_envcrypt()
    with pytest.raises(KeyError):
        with fs.open("/t.txt", "w", encoding="utf-8") as f:
            f.write("partial line\n" * 1000)
            raise KeyError("boom")
    assert not target.exists("/t.txt")
    with fs.open("/t.txt", "w") as f:
        f.write("whole\n")
    assert fs.cat_file("/t.txt") == b"whole\n"
    given = EnvcryptFileSystem(fs=fsspec.filesystem("memory", skip_instance_cache=True, password="pw-123"),
                               skip_instance_cache=True)
    blob = pickle.dumps(given)
    assert b"pw-123" not in blob and type(pickle.loads(blob).target).__name__ == "MemoryFileSystem"


def test_headers_longer_than_the_probe_and_context_on_reads() -> None:
    context = {"dataset": "x" * 5000, "owner": "team-a"}
    fs, target = memory_envcrypt(encryption_context=context)
    data = os.urandom(CHUNK_SIZE + 3)
    fs.pipe_file("/long", data)
    HEADS.clear()
    info = fs.info("/long")
    assert info["header_size"] > 5000 and info["size"] == len(data)
    assert fs.cat_file("/long", 10, CHUNK_SIZE + 2) == data[10 : CHUNK_SIZE + 2]
    other = EnvcryptFileSystem(fs=target, encryption_context={"owner": "team-b"}, skip_instance_cache=True)
    from envcrypt import ContextMismatchError

    with pytest.raises(ContextMismatchError):
        other.cat_file("/long")


@pytest.mark.parametrize("cache_type", ["none", "readahead", "bytes", "blockcache", "first", "all"])
def test_every_fsspec_cache_type_reads_correctly(cache_type: str) -> None:
    fs, _ = memory_envcrypt()
    data = os.urandom(10 * CHUNK_SIZE + 77)
    fs.pipe_file("/c", data)
    with fs.open("/c", "rb", cache_type=cache_type, block_size=3 * CHUNK_SIZE + 5) as f:
        for start, n in [(5, 100), (CHUNK_SIZE - 3, 10), (7 * CHUNK_SIZE, 2 * CHUNK_SIZE), (0, len(data))]:
            f.seek(start)
            assert f.read(n) == data[start : start + n]


def test_transactions_publish_on_commit_only() -> None:
    fs, target = memory_envcrypt()
    with fs.transaction:
        with fs.open("/tx/a", "wb") as f:
            f.write(b"in a transaction")
        assert not target.exists("/tx/a")  # sealed, not yet published
    assert fs.cat_file("/tx/a") == b"in a transaction"
    with pytest.raises(RuntimeError):
        with fs.transaction:
            with fs.open("/tx/b", "wb") as f:
                f.write(b"never")
            raise RuntimeError("roll back")
    assert not target.exists("/tx/b")


@pytest.mark.parametrize("mode", ["wb", "wt"])
def test_fsspec_open_publishes_nothing_when_its_block_raises(tmp_path: Path, mode: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = f"envcrypt::file://{data}/half.csv"
    with pytest.raises(RuntimeError), pytest.warns(UnpublishedWriteWarning):
        with fsspec.open(url, mode) as f:
            f.write(b"row\n" * 10_000 if mode == "wb" else "row\n" * 10_000)
            raise RuntimeError("the producer failed half-way")
    assert sorted(p.name for p in data.iterdir()) == []  # no object, no temp file
    # a write inside an except block (an exception already being handled) still publishes
    try:
        raise KeyError("handled")
    except KeyError:
        with fsspec.open(url, mode) as f:
            f.write(b"fallback\n" if mode == "wb" else "fallback\n")
    with fsspec.open(url, "rb") as f:
        assert f.read() == b"fallback\n"


def test_finally_close_after_a_failed_producer_publishes_nothing(tmp_path: Path) -> None:
    fs = fsspec.filesystem("envcrypt", target_protocol="file", skip_instance_cache=True)
    path = f"{tmp_path}/half.bin"
    f = fs.open(path, "wb")
    with pytest.raises(ValueError), pytest.warns(UnpublishedWriteWarning):
        try:
            f.write(os.urandom(100_000))
            raise ValueError("producer failed")
        finally:
            f.close()
    assert not os.path.exists(path)
