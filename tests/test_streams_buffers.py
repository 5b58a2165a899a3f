"""The streams' pooled batch buffers (envcrypt._batches): reused, never mixed up, wiped of plaintext."""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
from collections.abc import Iterator

import pytest

import envcrypt
from envcrypt import _batches
from envcrypt.format import CHUNK_SIZE, SEALED_CHUNK_SIZE
from envcrypt.streams import DEFAULT_BATCH_CHUNKS

STAGE = DEFAULT_BATCH_CHUNKS * CHUNK_SIZE
OUT = DEFAULT_BATCH_CHUNKS * SEALED_CHUNK_SIZE
MARKER = b"plaintext-that-must-not-linger:"


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_batches, "_idle", {})
    yield


@pytest.fixture
def key_uri() -> str:
    from envcrypt.keys.vault import LocalVault

    LocalVault().create_key("pool")
    return "local:pool"


def garbage_pool() -> None:
    """Fill the pool with buffers full of 0xAA: a stream that read a byte it did not write would show it."""
    for size in (STAGE, OUT):
        for _ in range(_batches.KEEP):
            _batches.give(bytearray(b"\xaa" * size))


def write(data: bytes, uri: str, piece: int) -> bytes:
    sink = io.BytesIO()
    with envcrypt.open_writer(sink, uri) as w:
        for off in range(0, len(data), piece):
            w.write(data[off : off + piece])
    return sink.getvalue()


def test_a_closed_writer_pools_its_buffers_and_wipes_the_plaintext_it_staged(key_uri: str) -> None:
    data = (MARKER * 4000)[: 3 * CHUNK_SIZE + 1234]  # short of a batch: all of it is staged
    blob = write(data, key_uri, 1000)
    assert envcrypt.decrypt(blob, trusted_keys=key_uri) == data
    assert _batches.idle_bytes() == STAGE + OUT
    stage = _batches.take(STAGE)
    assert MARKER not in stage
    assert stage[: len(data)] == bytes(len(data))
    assert _batches.idle_bytes() == OUT


def test_an_aborted_writer_also_wipes_what_it_staged(key_uri: str) -> None:
    sink = io.BytesIO()
    with pytest.raises(RuntimeError), envcrypt.open_writer(sink, key_uri) as w:
        w.write(MARKER * 100)
        raise RuntimeError("the application fails mid-write")
    assert MARKER not in _batches.take(STAGE)


def test_reused_buffers_full_of_other_bytes_give_exact_objects(key_uri: str) -> None:
    rng = os.urandom
    for size, piece in [(0, 1), (1, 1), (CHUNK_SIZE, 7000), (STAGE + 5, STAGE), (2 * STAGE + CHUNK_SIZE + 3, 65536)]:
        garbage_pool()
        data = rng(size)
        blob = write(data, key_uri, piece)
        garbage_pool()
        assert envcrypt.decrypt(blob, trusted_keys=key_uri) == data


def test_a_file_reader_reads_exact_ranges_through_a_reused_fetch_buffer(key_uri: str, tmp_path: object) -> None:
    data = os.urandom(STAGE + 3 * CHUNK_SIZE + 17)
    path = os.path.join(str(tmp_path), "obj")
    with open(path, "wb") as f:
        f.write(envcrypt.encrypt(data, key_uri))
    for start, length in [(0, 10), (CHUNK_SIZE - 3, 9), (STAGE - 1, CHUNK_SIZE + 2), (len(data) - 5, 5)]:
        for size in (STAGE, OUT, OUT + 16):  # whatever the reader's fetch buffer is, it is garbage first
            _batches.give(bytearray(b"\xaa" * size))
        with open(path, "rb") as f, envcrypt.open_reader(f, trusted_keys=key_uri) as r:
            r.seek(start)
            assert r.read(length) == data[start : start + length]
            r.seek(0)
            assert r.read() == data


def test_the_pool_keeps_at_most_keep_idle_buffers_of_a_size() -> None:
    for _ in range(_batches.KEEP + 3):
        _batches.give(bytearray(100))
    assert _batches.idle_bytes() == 100 * _batches.KEEP
    _batches.give(bytearray())  # an empty buffer is not pooled
    assert _batches.idle_bytes() == 100 * _batches.KEEP


def test_concurrent_streams_never_share_a_buffer(key_uri: str) -> None:
    failures: list[str] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(12):
            data = bytes([n]) * (CHUNK_SIZE * (i % 3) + 1000 * n + i)
            blob = write(data, key_uri, 5000 + n)
            if envcrypt.decrypt(blob, trusted_keys=key_uri) != data:
                failures.append(f"thread {n} round {i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert _batches.idle_bytes() <= _batches.KEEP * (STAGE + OUT)


def _child_idle(queue: multiprocessing.Queue[int]) -> None:
    queue.put(_batches.idle_bytes())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_starts_with_an_empty_pool(key_uri: str) -> None:
    write(b"x" * 100, key_uri, 100)
    assert _batches.idle_bytes() > 0
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    child = ctx.Process(target=_child_idle, args=(queue,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 0


def test_whole_chunks_of_a_write_are_sealed_at_once_and_only_the_tail_is_staged(key_uri: str) -> None:
    """A 1 MiB piece is sealed straight from the caller's buffer (no copy into the stage): its
    chunks reach the sink during write(), before close."""
    sink = io.BytesIO()
    data = os.urandom(64 * CHUNK_SIZE + 100)
    with envcrypt.open_writer(sink, key_uri) as w:
        start = len(sink.getvalue())  # header and body prefix
        w.write(data)
        assert len(sink.getvalue()) - start == 64 * SEALED_CHUNK_SIZE
        w.write(data[:CHUNK_SIZE - 100])  # completes a chunk in the stage: staged until close
        assert len(sink.getvalue()) - start == 64 * SEALED_CHUNK_SIZE
    assert envcrypt.decrypt(sink.getvalue(), trusted_keys=key_uri) == data + data[:CHUNK_SIZE - 100]
