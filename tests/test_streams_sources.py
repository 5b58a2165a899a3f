"""Streams over every kind of source and in every kernel mode: unaligned writes and reads,
in-memory sources decrypted in place (bytes, bytearray, memoryview, mmap, BytesIO), many
threads at once, and the DEK-cache charge handed to the writer explicitly."""

from __future__ import annotations

import io
import mmap
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envcrypt
from envcrypt import _kernel, envelope
from envcrypt.envelope import new_header, new_stream_header
from envcrypt.errors import IntegrityError
from envcrypt.format import CHUNK_SIZE, parse_header
from envcrypt.keys.cache import DekCache
from envcrypt.streams import EncryptingWriter

C = CHUNK_SIZE
MODES = ["pure", "compiled", "hybrid"] if _kernel.available() else ["pure"]
SLOW_OK = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    _kernel.use(request.param)
    yield request.param
    _kernel.use(None)


def pattern(size: int) -> bytes:
    return bytes((i * 31 + i // 251) % 256 for i in range(size))


@SLOW_OK
@given(pieces=st.lists(st.integers(0, 3 * C + 5), max_size=8))
def test_unaligned_writes_give_the_plaintext_back(mode: str, pieces: list[int]) -> None:
    data = pattern(sum(pieces))
    sink = io.BytesIO()
    with envcrypt.open_writer(sink, batch_chunks=3) as w:
        at = 0
        for n in pieces:
            assert w.write(memoryview(data)[at : at + n]) == n
            at += n
    assert envcrypt.decrypt(sink.getvalue()) == data


SOURCES: dict[str, Callable[[bytes, Path], Any]] = {
    "bytes": lambda blob, _: blob,
    "bytearray": lambda blob, _: bytearray(blob),
    "memoryview": lambda blob, _: memoryview(blob),
    "BytesIO": lambda blob, _: io.BytesIO(blob),
    "file": lambda blob, tmp: open(_write(tmp, blob), "rb"),
    "unbuffered file": lambda blob, tmp: open(_write(tmp, blob), "rb", buffering=0),
}


def _write(tmp: Path, blob: bytes) -> Path:
    path = tmp / "object.envc"
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("source", list(SOURCES))
@SLOW_OK
@given(ops=st.lists(st.tuples(st.integers(0, 6 * C + 100), st.integers(0, 3 * C + 9)), min_size=1, max_size=6))
def test_any_source_any_unaligned_range(mode: str, source: str, tmp_path: Path, ops: list[tuple[int, int]]) -> None:
    data = pattern(5 * C + 77)
    blob = envcrypt.encrypt(data)
    src = SOURCES[source](blob, tmp_path)
    try:
        reader = envcrypt.open_reader(src)
        for offset, length in ops:
            reader.seek(offset)
            buf = bytearray(length)
            n = reader.readinto(buf)
            assert bytes(buf[:n]) == data[offset : offset + length]
        reader.seek(0)
        assert reader.read() == data
        reader.close()
    finally:
        if hasattr(src, "close"):
            src.close()


def test_an_mmap_source_can_be_closed_after_the_reader(mode: str, tmp_path: Path) -> None:
    data = pattern(3 * C + 5)
    path = _write(tmp_path, envcrypt.encrypt(data))
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        reader = envcrypt.open_reader(mm)
        reader.seek(C - 3)
        assert reader.read(10) == data[C - 3 : C + 7]
        assert reader.read() == data[C + 7 :]
        reader.close()
        mm.close()  # no view of it is left behind


def test_a_failed_open_of_an_mmap_releases_it(tmp_path: Path) -> None:
    blob = bytearray(envcrypt.encrypt(pattern(100)))
    blob[parse_header(bytes(blob))[1] + 3] ^= 1  # the salt: a commitment mismatch
    path = _write(tmp_path, bytes(blob))
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        with pytest.raises(envcrypt.WrongKeyError):
            envcrypt.open_reader(mm)
        mm.close()


@pytest.mark.parametrize("source", ["bytes", "BytesIO"])
def test_a_tampered_in_memory_source_releases_nothing_unauthenticated(mode: str, source: str, tmp_path: Path) -> None:
    data = pattern(4 * C + 9)
    blob = bytearray(envcrypt.encrypt(data))
    start = parse_header(bytes(blob))[1] + 56
    blob[start + 2 * (C + 16) + 5] ^= 1  # inside chunk 2
    reader = envcrypt.open_reader(SOURCES[source](bytes(blob), tmp_path))
    out = bytearray(b"\xee" * len(data))
    with pytest.raises(IntegrityError):
        reader.readinto(out)
    # chunks 0 and 1 may be there (authenticated); nothing of chunk 2 onwards
    assert out[2 * C :] == bytes(len(data) - 2 * C) or out[2 * C :] == b"\xee" * (len(data) - 2 * C)


def test_a_truncated_in_memory_source_is_an_integrity_error(mode: str) -> None:
    blob = envcrypt.encrypt(pattern(3 * C))
    for cut in (1, 16, C + 16):
        with pytest.raises(IntegrityError):
            envcrypt.open_reader(blob[:-cut]).read()


def test_many_threads_stream_at_once(mode: str) -> None:
    def one(i: int) -> bool:
        data = pattern(i * 37_000 + 5)
        sink = io.BytesIO()
        with envcrypt.open_writer(sink, encryption_context={"i": str(i)}) as w:
            for at in range(0, len(data), 70_001):
                w.write(data[at : at + 70_001])
        blob = sink.getvalue()
        reader = envcrypt.open_reader(io.BytesIO(blob), encryption_context={"i": str(i)})
        got = bytearray()
        buf = bytearray(1 << 20)
        while n := reader.readinto(buf):
            got += buf[:n]
        return bytes(got) == data and envcrypt.decrypt(blob) == data

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(1, 17)))


def test_streams_never_touch_the_switch_interval(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(sys, "setswitchinterval", calls.append)
    data = pattern(130 * C + 1)  # runs of two pieces and more: the helper thread works
    sink = io.BytesIO()
    with envcrypt.open_writer(sink) as w:
        w.write(data)
    assert envcrypt.open_reader(io.BytesIO(sink.getvalue())).read() == data
    assert envcrypt.decrypt(envcrypt.encrypt(data)) == data
    assert calls == []


# ---------------------------------------------------------------- the DEK cache's byte charge


def test_the_writer_charges_exactly_what_it_sealed_once() -> None:
    charged: list[int] = []
    dek, header = new_header(None, None, {})
    with EncryptingWriter(io.BytesIO(), header, dek, charge=charged.append) as w:
        w.write(b"x" * 1000)
        w.write(b"y" * (2 * C))
    assert charged == [1000 + 2 * C]


def test_an_aborted_writer_still_charges_what_it_sealed() -> None:
    charged: list[int] = []
    dek, header = new_header(None, None, {})
    w = EncryptingWriter(io.BytesIO(), header, dek, batch_chunks=1, charge=charged.append)
    w.write(b"z" * (3 * C + 5))
    w.abort()
    assert charged == [3 * C]  # the three whole chunks went out; the staged tail never did


def test_stream_headers_hand_the_charge_to_the_caller_not_a_registry() -> None:
    cache = DekCache(max_bytes=10 * C)
    opts = {"dek_cache": cache}
    dek, header, charge = new_stream_header(None, None, opts)
    assert charge is not None and repr(charge) == "<StreamCharge>"
    assert not any(name.startswith("_stream_charge") or name == "claim_stream_charge" for name in vars(envelope))
    with EncryptingWriter(io.BytesIO(), header, dek, charge=charge) as w:
        w.write(b"a" * (11 * C))  # over the entry's budget: its DEK serves no further write
    dek2, _, _ = new_stream_header(None, None, opts)
    assert dek2 != dek
    # a header made for a known size carries no stream charge
    assert len(new_header(None, None, opts, 5)) == 2
    _, _, none = new_stream_header(None, None, {"dek_cache": False})
    assert none is None


def test_open_writer_charges_the_cache_it_was_given() -> None:
    cache = DekCache(max_bytes=4 * C)
    deks = []
    for _ in range(3):
        sink = io.BytesIO()
        with envcrypt.open_writer(sink, dek_cache=cache) as w:
            w.write(b"q" * (3 * C))
        deks.append(sink.getvalue())
    # 3 C per stream against a 4 C budget: the second stream may still take the DEK
    # (its size was unknown), the third may not
    headers = [parse_header(b)[0].key_slots for b in deks]
    assert headers[0] == headers[1] and headers[2] != headers[0]
