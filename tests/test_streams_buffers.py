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


class _FailingSink(io.RawIOBase):
    """Accepts the header, then fails every write: a network that went down mid-object."""

    def __init__(self) -> None:
        self.calls = 0

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        self.calls += 1
        if self.calls > 1:
            raise OSError("network down")
        return len(memoryview(b))  # type: ignore[arg-type]


def test_a_buffer_still_viewed_through_a_kept_traceback_is_wiped_and_never_pooled(key_uri: str) -> None:
    """The sink fails while the final chunk is written; the caller keeps the exception, whose
    frames hold views of the stage.  The next writer's plaintext must not show through them."""
    w = envcrypt.open_writer(_FailingSink(), key_uri)
    w.write(MARKER * 100)
    with pytest.raises(OSError) as kept:
        w.close()
    views = []
    tb = kept.value.__traceback__
    while tb is not None:
        views += [v for v in tb.tb_frame.f_locals.values() if isinstance(v, memoryview)]
        tb = tb.tb_next
    live = []
    for v in views:
        try:
            live.append((v, bytes(v)))
        except ValueError:  # released
            continue
    assert live and all(MARKER not in seen for _, seen in live)  # wiped although still viewed
    with envcrypt.open_writer(io.BytesIO(), key_uri) as w2:
        w2.write(b"TENANT-B-PLAINTEXT" * 100)
        assert all(bytes(v) == seen for v, seen in live)  # no buffer behind a live view was reused
    assert all(bytes(v) == seen for v, seen in live)


def test_give_wipes_but_does_not_pool_a_buffer_with_a_live_view() -> None:
    buf = bytearray(MARKER * 10)
    view = memoryview(buf)
    _batches.give(buf, plaintext_up_to=len(buf))
    assert _batches.idle_bytes() == 0
    assert bytes(view) == bytes(len(buf))
    view.release()
    _batches.give(buf)
    assert _batches.idle_bytes() == len(buf)


class _Interrupt(BaseException):
    """Stands in for what a signal handler or Ctrl-C raises between two bytecodes."""


def test_staged_plaintext_is_wiped_even_if_the_write_is_interrupted_right_after_the_copy(key_uri: str) -> None:
    import inspect
    import sys

    from envcrypt import streams

    source, first = inspect.getsourcelines(streams.EncryptingWriter.write)
    line = first + next(i for i, text in enumerate(source) if "self._staged += rest" in text)
    code = streams.EncryptingWriter.write.__code__

    def tracer(frame: object, event: str, arg: object) -> object:
        if getattr(frame, "f_code", None) is not code:
            return None

        def local(frame: object, event: str, arg: object) -> object:
            if event == "line" and getattr(frame, "f_lineno", None) == line:
                sys.settrace(None)
                raise _Interrupt()
            return local

        return local

    w = envcrypt.open_writer(io.BytesIO(), key_uri)
    sys.settrace(tracer)  # type: ignore[arg-type]
    try:
        with pytest.raises(_Interrupt):
            w.write(MARKER * 50)
    finally:
        sys.settrace(None)
    w.abort()
    stage = _batches.take(STAGE)
    assert MARKER not in stage
