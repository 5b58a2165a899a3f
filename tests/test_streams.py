"""The streaming writer and the random-access / forward-only readers."""

from __future__ import annotations

import gc
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envcrypt
from envcrypt.chunked import ChunkCipher
from envcrypt.errors import ClosedError, IntegrityError
from envcrypt.format import BODY_PREFIX_SIZE, CHUNK_SIZE, SEALED_CHUNK_SIZE, parse_header
from envcrypt.streams import DecryptingReader

from .stream_helpers import pipe

C = CHUNK_SIZE
SIZES = [0, 1, C - 1, C, C + 1, 2 * C - 1, 2 * C, 2 * C + 1, 5 * C + 7]
SENTINEL = 0xEE


def plain(size: int) -> bytes:
    """Plaintext with no zero and no SENTINEL byte (so a leaked byte can be told apart)."""
    return bytes((i * 7 + i // C) % 200 + 1 for i in range(min(size, 256 * 200))) * (size // (256 * 200) + 1)


def make(size: int) -> bytes:
    return plain(size)[:size]


@pytest.fixture(scope="module")
def shared_vault(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A vault for objects made once per module (the autouse vault is per test)."""
    return str(tmp_path_factory.mktemp("streams") / "vault")


@pytest.fixture(scope="module")
def objects(shared_vault: str) -> dict[int, bytes]:
    return {size: envcrypt.encrypt(make(size), vault=shared_vault) for size in SIZES}


def body_start(blob: bytes) -> int:
    """Offset of sealed chunk 0 in a stored object."""
    return parse_header(blob)[1] + BODY_PREFIX_SIZE


def flip(blob: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(blob)
    out[offset] ^= mask
    return bytes(out)


class ReadLog(io.BytesIO):
    """A seekable source that records how many bytes each readinto/read fetched."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.fetched: list[int] = []

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        self.fetched.append(n)
        return n

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.fetched.append(len(out))
        return out


@pytest.fixture
def opened_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many chunks each ``ChunkCipher.open`` call decrypted."""
    counts: list[int] = []
    real = ChunkCipher.open

    def counting(self: ChunkCipher, first: int, src: memoryview, dst: memoryview, final: bool) -> int:
        counts.append(-(-len(src) // SEALED_CHUNK_SIZE) or 1)
        return real(self, first, src, dst, final)

    monkeypatch.setattr(ChunkCipher, "open", counting)
    return counts


# ---------------------------------------------------------------- random access, any range

SLOW_OK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

op = st.one_of(
    st.tuples(st.just("seek"), st.sampled_from([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END]), st.integers(-6 * C, 6 * C)),
    st.tuples(st.just("read"), st.just(0), st.integers(-1, 3 * C + 3)),
    st.tuples(st.just("readinto"), st.just(0), st.integers(0, 3 * C + 3)),
)


@pytest.mark.parametrize("size", SIZES)
@SLOW_OK
@given(ops=st.lists(op, min_size=1, max_size=8))
def test_any_sequence_of_seeks_and_reads_matches_the_plaintext(
    objects: dict[int, bytes], shared_vault: str, size: int, ops: list[tuple[str, int, int]]
) -> None:
    plaintext = make(size)
    reader = envcrypt.open_reader(io.BytesIO(objects[size]), vault=shared_vault)
    pos = 0
    for kind, whence, n in ops:
        if kind == "seek":
            target = n + (0, pos, size)[whence]
            if target < 0:
                with pytest.raises(ValueError):
                    reader.seek(n, whence)
                continue
            assert reader.seek(n, whence) == target
            pos = target
        elif kind == "read":
            expected = plaintext[pos:] if n < 0 else plaintext[pos : pos + n]
            assert reader.read(n) == expected
            pos += len(expected)
        else:
            buf = bytearray([SENTINEL]) * n
            expected = plaintext[pos : pos + n]
            assert reader.readinto(buf) == len(expected)
            assert buf[: len(expected)] == expected
            assert buf[len(expected) :] == bytes([SENTINEL]) * (n - len(expected))
            pos += len(expected)
        assert reader.tell() == pos


@pytest.mark.parametrize("size", SIZES)
@SLOW_OK
@given(data=st.data())
def test_any_offset_and_length(objects: dict[int, bytes], shared_vault: str, size: int, data: st.DataObject) -> None:
    plaintext = make(size)
    edges = [0, 1, C - 1, C, C + 1, 2 * C - 1, 2 * C, 2 * C + 1, size - 1, size, size + 1, size + C]
    offset = data.draw(st.one_of(st.sampled_from([e for e in edges if e >= 0]), st.integers(0, size + 2 * C)))
    length = data.draw(st.one_of(st.sampled_from([0, 1, C - 1, C, C + 1, 2 * C]), st.integers(0, size + C)))
    reader = envcrypt.open_reader(io.BytesIO(objects[size]), vault=shared_vault)
    reader.seek(offset)
    assert reader.read(length) == plaintext[offset : offset + length]
    back = -data.draw(st.integers(0, size))
    assert reader.seek(back, io.SEEK_END) == size + back
    assert reader.read(length) == plaintext[size + back : size + back + length]


@pytest.mark.parametrize("size", SIZES)
def test_reads_at_and_past_the_end_return_nothing(objects: dict[int, bytes], shared_vault: str, size: int) -> None:
    reader = envcrypt.open_reader(io.BytesIO(objects[size]), vault=shared_vault)
    for where in (size, size + 1, size + 10 * C):
        reader.seek(where)
        assert reader.read(100) == b""
        assert reader.read() == b""
        assert reader.readinto(bytearray(10)) == 0
        assert reader.tell() == where
    assert reader.readinto(bytearray(0)) == 0


# ---------------------------------------------------------------- forward-only reader


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("step", [7, 1000, C, 3 * C + 1, -1])
def test_forward_only_reader_gives_the_same_plaintext(
    objects: dict[int, bytes], shared_vault: str, size: int, step: int
) -> None:
    reader = envcrypt.open_reader(pipe(objects[size]), vault=shared_vault)
    assert not reader.seekable()
    got = bytearray()
    while True:
        part = reader.read(step)
        if not part:
            break
        got += part
        if step < 0:
            assert reader.read() == b""
            break
    assert got == make(size)
    assert reader.read(5) == b""
    with pytest.raises(io.UnsupportedOperation):
        reader.seek(0)


@pytest.mark.parametrize("step", [1, 7, 40])
def test_forward_only_reader_tolerates_short_reads(objects: dict[int, bytes], shared_vault: str, step: int) -> None:
    reader = envcrypt.open_reader(pipe(objects[2 * C + 1], step=step), vault=shared_vault)
    assert reader.read() == make(2 * C + 1)


def test_forward_only_reader_readinto(objects: dict[int, bytes], shared_vault: str) -> None:
    size = 5 * C + 7
    reader = envcrypt.open_reader(pipe(objects[size], step=977), vault=shared_vault)
    buf = bytearray(C + 3)
    got = bytearray()
    while n := reader.readinto(buf):
        got += buf[:n]
    assert got == make(size)


@pytest.mark.parametrize("size", [C - 1, C, 2 * C + 1, 5 * C + 7])
def test_forward_only_reader_detects_truncation(objects: dict[int, bytes], shared_vault: str, size: int) -> None:
    blob = objects[size]
    start = body_start(blob)
    cuts = {len(blob) - 1, len(blob) - 16, len(blob) - 17, start, start + 1}
    cuts |= {start + k * SEALED_CHUNK_SIZE + d for k in range(1, size // C + 1) for d in (-1, 0, 1, 16)}
    for cut in sorted(c for c in cuts if start <= c < len(blob)):
        reader = envcrypt.open_reader(pipe(blob[:cut]), vault=shared_vault)
        got = bytearray()
        with pytest.raises(IntegrityError):
            while part := reader.read(4000):
                got += part
        assert got == make(size)[: len(got)]  # only an authenticated prefix came out
        with pytest.raises(IntegrityError):
            reader.read(1)


def test_forward_only_reader_rejects_appended_bytes(objects: dict[int, bytes], shared_vault: str) -> None:
    for extra in (b"\x00", bytes(16), bytes(SEALED_CHUNK_SIZE)):
        reader = envcrypt.open_reader(pipe(objects[2 * C + 1] + extra), vault=shared_vault)
        with pytest.raises(IntegrityError):
            reader.read()


# ---------------------------------------------------------------- what a read costs


def test_small_read_at_a_large_offset_touches_at_most_two_chunks(
    shared_vault: str, opened_chunks: list[int]
) -> None:
    size = 300 * C + 123
    blob = envcrypt.encrypt(make(size), vault=shared_vault)
    source = ReadLog(blob)
    reader = envcrypt.open_reader(source, vault=shared_vault)
    for offset in (250 * C + 100, 250 * C - 512, 299 * C, 3 * C - 1):
        source.fetched.clear()
        opened_chunks.clear()
        reader.seek(offset)
        assert reader.read(1024) == make(size)[offset : offset + 1024]
        assert sum(opened_chunks) <= 2
        assert sum(source.fetched) <= 2 * SEALED_CHUNK_SIZE


@pytest.mark.parametrize(("offset", "length"), [(0, 600 * C + 5), (100, 300 * C), (C - 1, 257 * C + 2), (5, 256 * C)])
def test_long_reads_across_batches(shared_vault: str, offset: int, length: int) -> None:
    """Reads longer than one batch of chunks (4 MiB), aligned or not, in one call."""
    size = 600 * C + 5
    plaintext = make(size)
    reader = envcrypt.open_reader(io.BytesIO(envcrypt.encrypt(plaintext, vault=shared_vault)), vault=shared_vault)
    reader.seek(offset)
    buf = bytearray(length)
    assert reader.readinto(buf) == min(length, size - offset)
    assert buf[: size - offset] == plaintext[offset : offset + length]


def test_size_opens_only_the_final_chunk(shared_vault: str, opened_chunks: list[int]) -> None:
    size = 100 * C + 5
    source = ReadLog(envcrypt.encrypt(make(size), vault=shared_vault))
    reader = envcrypt.open_reader(source, vault=shared_vault)
    source.fetched.clear()
    assert reader.size == size
    assert opened_chunks == [1] and sum(source.fetched) == 5 + 16


# ---------------------------------------------------------------- failures


def test_final_chunk_is_authenticated_before_anything_that_depends_on_the_length(
    objects: dict[int, bytes], shared_vault: str
) -> None:
    size = 2 * C + 1
    bad = flip(objects[size], len(objects[size]) - 1)  # the final chunk's tag
    for action in (
        lambda r: r.size,
        lambda r: r.seek(-1, io.SEEK_END),
        lambda r: r.read(),
        lambda r: (r.seek(size), r.read(1)),
        lambda r: (r.seek(size + 5), r.read(1)),
        lambda r: (r.seek(2 * C), r.read(1)),
    ):
        reader = envcrypt.open_reader(io.BytesIO(bad), vault=shared_vault)
        assert reader.read(10) == make(size)[:10]  # an earlier chunk needs no length
        with pytest.raises(IntegrityError):
            action(reader)


# Cutting bytes off a short final chunk until only 16 are left makes a stored
# length whose final chunk looks empty: the plaintext size then is a multiple of
# 16 KiB and a read up to that size never reaches the (empty) final chunk.
TRUNCATED_TO_EMPTY_FINAL = [(2 * C + 1, 1), (C + 100, 100), (5 * C + 7, 7)]


@pytest.mark.parametrize(("size", "cut"), TRUNCATED_TO_EMPTY_FINAL)
@pytest.mark.parametrize("how", ["read()", "read(n)", "readinto"])
def test_reading_up_to_the_end_authenticates_the_length(shared_vault: str, size: int, cut: int, how: str) -> None:
    blob = envcrypt.encrypt(make(size), vault=shared_vault)[:-cut]
    reader = envcrypt.open_reader(io.BytesIO(blob), vault=shared_vault)
    with pytest.raises(IntegrityError):
        if how == "read()":
            reader.read()
        elif how == "read(n)":
            reader.read(size + 10)
        else:
            reader.readinto(bytearray(size + 10))


def test_a_reader_that_raised_keeps_raising(objects: dict[int, bytes], shared_vault: str) -> None:
    size = 5 * C + 7
    blob = objects[size]
    bad = flip(blob, body_start(blob) + 3 * SEALED_CHUNK_SIZE + 10)
    reader = envcrypt.open_reader(io.BytesIO(bad), vault=shared_vault)
    assert reader.read(C) == make(size)[:C]
    reader.seek(3 * C)
    with pytest.raises(IntegrityError):
        reader.read(10)
    for action in (
        lambda: reader.read(10),
        lambda: reader.seek(0),
        lambda: reader.readinto(bytearray(5)),
        lambda: reader.size,
        lambda: reader.read(),
    ):
        with pytest.raises(IntegrityError):
            action()


READS = [  # (offset, length) around the tampered chunk 3 of a 6-chunk object
    (3 * C, C),  # exactly the chunk
    (3 * C + 100, 50),  # inside it
    (2 * C, 3 * C),  # aligned run through it
    (C + 5, 4 * C),  # unaligned run through it, with edges
    (3 * C - 10, 20),  # straddling into it
    (0, 6 * C),  # everything
]


@pytest.mark.parametrize(
    ("seekable", "offset", "length"),
    [pytest.param(True, o, n, id=f"seekable-{o}-{n}") for o, n in READS]
    # forward-only: reaching an offset inside the bad chunk is itself the failing read
    + [pytest.param(False, o, n, id=f"forward-only-{o}-{n}") for o, n in READS if o <= 3 * C],
)
def test_failed_readinto_leaves_no_unauthenticated_bytes(
    objects: dict[int, bytes], shared_vault: str, offset: int, length: int, seekable: bool
) -> None:
    size = 5 * C + 7
    plaintext = make(size)
    blob = objects[size]
    # flipping ciphertext bits flips the same plaintext bits (CTR): a leak would show
    tampered = bytearray(blob)
    for i in range(0, C, 97):
        tampered[body_start(blob) + 3 * SEALED_CHUNK_SIZE + i] ^= 0x80
    source: Any = io.BytesIO(bytes(tampered)) if seekable else pipe(bytes(tampered))
    reader = envcrypt.open_reader(source, vault=shared_vault)
    if seekable:
        reader.seek(offset)
    else:
        assert reader.read(offset) == plaintext[:offset]
    buf = bytearray([SENTINEL]) * length
    with pytest.raises(IntegrityError):
        reader.readinto(buf)
    for i, byte in enumerate(buf):
        at = offset + i
        if 3 * C <= at < 4 * C:  # the failed chunk: zeros or untouched
            assert byte in (0, SENTINEL), f"byte {at} leaked"
        else:  # elsewhere: zeros, untouched, or authenticated plaintext
            assert byte in (0, SENTINEL, plaintext[at] if at < size else SENTINEL)


def test_open_reader_rejects_a_truncated_object(objects: dict[int, bytes], shared_vault: str) -> None:
    blob = objects[2 * C + 1]
    for cut in (len(blob) - 2, len(blob) - 17, body_start(blob) + SEALED_CHUNK_SIZE, body_start(blob)):
        with pytest.raises(IntegrityError):  # an impossible length: refused at open, before any key
            envcrypt.open_reader(io.BytesIO(blob[:cut]), vault=shared_vault)
        if cut >= body_start(blob) + 56:  # a forward-only stream learns the length at its end
            forward = envcrypt.open_reader(pipe(blob[:cut]), vault=shared_vault)
            with pytest.raises(IntegrityError):
                forward.read()
    with pytest.raises(IntegrityError):  # not even the salt and commitment
        envcrypt.open_reader(io.BytesIO(blob[: body_start(blob) - 1]), vault=shared_vault)


def test_closed_reader(objects: dict[int, bytes], shared_vault: str) -> None:
    raw = io.BytesIO(objects[1])
    with envcrypt.open_reader(raw, vault=shared_vault, close_fileobj=True) as reader:
        assert reader.read() == make(1)
    assert raw.closed
    with pytest.raises(ClosedError):
        reader.read(1)
    with pytest.raises(ValueError):  # ClosedError is a ValueError, like io's
        reader.seek(0)


# ---------------------------------------------------------------- writer


class FailingSink(io.BytesIO):
    """A sink whose writes fail once ``limit`` bytes went through (a full disk)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(memoryview(data)) > self.limit:
            raise OSError(28, "No space left on device")
        return super().write(data)


@pytest.mark.parametrize("written", [0, 1, C, 2 * C, 2 * C + 5, 7 * C])
@pytest.mark.parametrize("batch_chunks", [1, 2, 256])
def test_exception_inside_writer_block_writes_no_final_chunk(written: int, batch_chunks: int) -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), envcrypt.open_writer(out, batch_chunks=batch_chunks) as writer:
        writer.write(make(written))
        raise RuntimeError("the producer failed")
    assert writer.closed
    blob = out.getvalue()
    sealed = len(blob) - body_start(blob)
    assert sealed % SEALED_CHUNK_SIZE == 0  # only whole, non-final chunks were written
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(blob)
    with pytest.raises(IntegrityError):
        envcrypt.open_reader(io.BytesIO(blob)).read()
    with pytest.raises(IntegrityError):
        envcrypt.open_reader(pipe(blob)).read()
    with pytest.raises(ClosedError):
        writer.write(b"more")


def test_writer_dropped_without_close_is_never_sealed() -> None:
    out = io.BytesIO()
    writer = envcrypt.open_writer(out)
    writer.write(make(3 * C))
    del writer
    gc.collect()
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(out.getvalue())


@pytest.mark.parametrize("wrap", ["text", "buffered"])
def test_exception_inside_a_wrapped_writer_writes_no_final_chunk(wrap: str) -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError):
        with envcrypt.open_writer(out) as writer, (
            io.TextIOWrapper(writer, encoding="utf-8")  # type: ignore[type-var]
            if wrap == "text"
            else io.BufferedWriter(writer)
        ) as wrapped:
            wrapped.write("row 1\n" if wrap == "text" else b"row 1\n")  # type: ignore[arg-type]
            raise RuntimeError("the producer failed")
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(out.getvalue())


def test_abort_then_close_writes_nothing_more() -> None:
    out = io.BytesIO()
    writer = envcrypt.open_writer(out, batch_chunks=1)
    writer.write(make(3 * C + 10))
    writer.abort()
    size = len(out.getvalue())
    writer.close()
    assert len(out.getvalue()) == size
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(out.getvalue())


@pytest.mark.parametrize("limit", [200, 5000, 3 * SEALED_CHUNK_SIZE])
def test_failed_sink_never_gets_a_final_chunk(limit: int) -> None:
    sink = FailingSink(limit)
    with pytest.raises(OSError), envcrypt.open_writer(sink, batch_chunks=1) as writer:
        for _ in range(20):
            writer.write(make(1000))
        writer.write(make(5 * C))
    with pytest.raises(ClosedError):
        writer.write(b"x")
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(sink.getvalue())


def test_writer_close_is_idempotent_and_closes_the_sink_when_asked(tmp_path: Path) -> None:
    raw = open(tmp_path / "o", "wb")
    writer = envcrypt.open_writer(raw, close_fileobj=True)
    writer.write(b"abc")
    writer.close()
    writer.close()
    assert raw.closed
    assert envcrypt.decrypt((tmp_path / "o").read_bytes()) == b"abc"


def test_writer_through_buffered_writer_and_reader_through_buffered_reader() -> None:
    out = io.BytesIO()
    plaintext = make(3 * C + 77)
    with io.BufferedWriter(envcrypt.open_writer(out), buffer_size=5000) as buffered:
        for pos in range(0, len(plaintext), 333):
            buffered.write(plaintext[pos : pos + 333])
    out.seek(0)
    reader = envcrypt.open_reader(out)
    assert isinstance(reader, DecryptingReader)
    with io.BufferedReader(reader) as buffered_in:
        assert buffered_in.read() == plaintext


def test_iteration_helpers_work(objects: dict[int, bytes], shared_vault: str) -> None:
    lines = b"".join(b"line %d\n" % i for i in range(5000))
    blob = envcrypt.encrypt(lines, vault=shared_vault)
    with io.BufferedReader(envcrypt.open_reader(io.BytesIO(blob), vault=shared_vault)) as f:
        assert list(f) == lines.splitlines(keepends=True)
