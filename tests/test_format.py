"""The header layout, its parser's bounds, and the size arithmetic (FORMAT.md)."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envcrypt import format as fmt
from envcrypt.envelope import read_header
from envcrypt.errors import (
    EnvcryptError,
    MalformedHeaderError,
    NotEncryptedError,
    UnsupportedVersionError,
)
from envcrypt.format import (
    BODY_PREFIX_SIZE,
    CHUNK_SIZE,
    FIXED_PREFIX_SIZE,
    MAGIC,
    MAX_CHUNKS,
    MAX_HEADER_SIZE,
    MAX_PLAINTEXT_SIZE,
    SEALED_CHUNK_SIZE,
    TAG_SIZE,
    Header,
    KeySlot,
    body_size,
    check_prefix,
    chunk_count,
    chunk_offset,
    chunk_span,
    encode_context,
    header_length_hint,
    object_plaintext_size,
    object_size,
    parse_header,
    plaintext_size,
)

from .vector_files import case_id, load

SLOT = KeySlot("local:k/1", 1, bytes(range(40)))


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def text(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return u16(len(raw)) + raw


def context_block(*pairs: tuple[str | bytes, str | bytes], count: int | None = None) -> bytes:
    return u16(len(pairs) if count is None else count) + b"".join(text(k) + text(v) for k, v in pairs)


def slot_bytes(uri: str | bytes = "local:k/1", algorithm: int = 1, wrapped: bytes = bytes(40)) -> bytes:
    return text(uri) + u16(algorithm) + text(wrapped)


def slot_block(*slots: bytes, count: int | None = None) -> bytes:
    return u16(len(slots) if count is None else count) + b"".join(slots)


def raw_header(
    ctx: bytes = context_block(),
    slots: bytes = slot_block(slot_bytes()),
    *,
    magic: bytes = MAGIC,
    version: int = 1,
    suite: int = 1,
    flags: int = 0,
    ctx_len: int | None = None,
    slots_len: int | None = None,
) -> bytes:
    return (
        magic + bytes([version, suite]) + u16(flags)
        + struct.pack(">I", len(ctx) if ctx_len is None else ctx_len) + ctx
        + struct.pack(">I", len(slots) if slots_len is None else slots_len) + slots
    )


# ---------------------------------------------------------------- layout


def test_header_bytes_match_the_field_table() -> None:
    header = Header({"b": "2", "a": "1"}, (SLOT,))
    ctx = context_block(("a", "1"), ("b", "2"))  # canonical: sorted by key
    slots = slot_block(slot_bytes("local:k/1", 1, bytes(range(40))))
    expected = b"ENVCRYPT\x01\x01\x00\x00" + struct.pack(">I", len(ctx)) + ctx + struct.pack(">I", len(slots)) + slots
    assert header.pack() == expected
    assert header.immutable == expected[: FIXED_PREFIX_SIZE + len(ctx)]
    parsed, size = parse_header(expected + b"body bytes")
    assert size == len(expected)
    assert parsed == header and dict(parsed.encryption_context) == {"a": "1", "b": "2"}


def test_empty_context_is_two_bytes() -> None:
    header = Header({}, (SLOT,))
    assert header.immutable == b"ENVCRYPT\x01\x01\x00\x00\x00\x00\x00\x02\x00\x00"


def test_with_slots_keeps_the_immutable_part() -> None:
    header = Header({"x": "y"}, (SLOT,))
    other = header.with_slots([KeySlot("aws-kms://alias/k", 16, b"\x07" * 200), SLOT])
    assert other.immutable == header.immutable
    assert other.pack() != header.pack()
    assert parse_header(other.pack())[0].key_slots == other.key_slots


def test_the_immutable_part_is_the_encoded_fields() -> None:
    """Kept once computed, it is still exactly what the fields encode to, and not a field."""
    header = Header({"b": "2", "a": "1"}, (SLOT,))
    expected = fmt._FIXED.pack(fmt.MAGIC, 1, 1, 0, len(fmt.encode_context(header.encryption_context)))
    assert header.immutable == expected + fmt.encode_context({"a": "1", "b": "2"})
    assert header.immutable is header.immutable
    assert header == Header({"a": "1", "b": "2"}, (SLOT,)) and "_immutable" not in repr(header)


def test_a_header_in_changing_memory_is_parsed_from_one_copy() -> None:
    """A header in memory that can change (a bytearray, an mmap) is read once: the fields
    come from a single copy, never from the live buffer twice."""
    blob = bytearray(Header({"k": "v"}, (SLOT,)).pack() + b"body")
    header, size = parse_header(memoryview(blob))
    assert header.encryption_context == {"k": "v"} and size == len(blob) - 4
    assert header.immutable == bytes(blob[: len(header.immutable)])


def test_max_header_size() -> None:
    assert MAX_HEADER_SIZE == 16 + 65536 + 4 + 65536


names = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12)
slots_strategy = st.builds(
    KeySlot, st.from_regex(r"[a-z]{1,8}:[A-Za-z0-9/._-]{1,40}", fullmatch=True),
    st.integers(0, 0xFFFF), st.binary(min_size=1, max_size=300),
)


@settings(max_examples=60, deadline=None)
@given(
    context=st.dictionaries(names, st.text(st.characters(blacklist_categories=["Cs"]), max_size=20), max_size=6),
    slots=st.lists(slots_strategy, min_size=1, max_size=16),
    trailing=st.binary(max_size=20),
)
def test_pack_parse_round_trip(context: dict[str, str], slots: list[KeySlot], trailing: bytes) -> None:
    header = Header(context, tuple(slots))
    packed = header.pack()
    parsed, size = parse_header(packed + trailing)
    assert size == len(packed)
    assert parsed == header
    assert header_length_hint(packed[: FIXED_PREFIX_SIZE + 4]) in (None, size)
    assert read_header(io.BytesIO(packed + trailing)) == (parsed, size)


# ---------------------------------------------------------------- parser errors

NOT_ENCRYPTED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("one byte", b"X"),
    ("parquet", b"PAR1" + bytes(100)),
    ("gzip", b"\x1f\x8b\x08\x00" + bytes(100)),
    ("lowercase magic", b"envcrypt" + raw_header()[8:]),
    ("magic shifted", b"\x00" + raw_header()),
]

MALFORMED: list[tuple[str, bytes]] = [
    ("ends inside magic", b"ENVCR"),
    ("magic only", MAGIC),
    ("ends inside fixed prefix", raw_header()[:12]),
    ("flags set", raw_header(flags=1)),
    ("high flag set", raw_header(flags=0x8000)),
    ("context_length 0xFFFFFFFF", raw_header(ctx_len=0xFFFFFFFF)),
    ("context_length 65537", raw_header(ctx_len=65537)),
    ("context_length past the input", raw_header(ctx_len=500)),
    ("context_length short", raw_header(ctx=context_block(("a", "b")), ctx_len=3)),
    ("slots_length 0xFFFFFFFF", raw_header(slots_len=0xFFFFFFFF)),
    ("slots_length 65537", raw_header(slots_len=65537)),
    ("slots_length past the input", raw_header(slots_len=1000)),
    ("slots_length short", raw_header(slots_len=10)),
    ("context pair count 257", raw_header(ctx=context_block(count=257) + b"\x00" * 1028)),
    ("context pair count past block", raw_header(ctx=context_block(("a", "b"), count=2))),
    ("context keys unsorted", raw_header(ctx=context_block(("b", "1"), ("a", "2")))),
    ("context keys repeated", raw_header(ctx=context_block(("a", "1"), ("a", "2")))),
    ("context key empty", raw_header(ctx=context_block(("", "1")))),
    ("context key not UTF-8", raw_header(ctx=context_block((b"\xff", "1")))),
    ("context value not UTF-8", raw_header(ctx=context_block(("a", b"\xc3")))),
    ("context trailing bytes", raw_header(ctx=context_block(("a", "1")) + b"\x00")),
    ("context string length past block", raw_header(ctx=u16(1) + u16(50) + b"a")),
    ("zero slots", raw_header(slots=slot_block(count=0))),
    ("17 slots", raw_header(slots=slot_block(*[slot_bytes()] * 17))),
    ("slot count past block", raw_header(slots=slot_block(slot_bytes(), count=2))),
    ("slot trailing bytes", raw_header(slots=slot_block(slot_bytes()) + b"\x00")),
    ("empty key URI", raw_header(slots=slot_block(slot_bytes(uri="")))),
    ("key URI 2049 bytes", raw_header(slots=slot_block(slot_bytes(uri="local:" + "k" * 2043)))),
    ("key URI not UTF-8", raw_header(slots=slot_block(slot_bytes(uri=b"local:\xff")))),
    ("empty wrapped key", raw_header(slots=slot_block(slot_bytes(wrapped=b"")))),
    ("wrapped key 8193 bytes", raw_header(slots=slot_block(slot_bytes(wrapped=bytes(8193))))),
    ("wrapped length past block", raw_header(slots=slot_block(text("local:k/1") + u16(1) + u16(99) + b"x"))),
]

UNSUPPORTED: list[tuple[str, bytes]] = [
    ("version 0", raw_header(version=0)),
    ("version 2", raw_header(version=2)),
    ("version 255", raw_header(version=255)),
    ("suite 0", raw_header(suite=0)),
    ("suite 2", raw_header(suite=2)),
]

CASES = (
    [pytest.param(data, NotEncryptedError, id=f"not-encrypted: {name}") for name, data in NOT_ENCRYPTED]
    + [pytest.param(data, MalformedHeaderError, id=f"malformed: {name}") for name, data in MALFORMED]
    + [pytest.param(data, UnsupportedVersionError, id=f"unsupported: {name}") for name, data in UNSUPPORTED]
)


@pytest.mark.parametrize(("data", "error"), CASES)
def test_bad_headers_raise_their_typed_error(data: bytes, error: type[EnvcryptError]) -> None:
    with pytest.raises(error):
        parse_header(data)
    with pytest.raises(error):
        read_header(io.BytesIO(data))


def test_key_uri_and_wrapped_key_at_their_bounds_parse() -> None:
    data = raw_header(slots=slot_block(slot_bytes(uri="local:" + "k" * 2042, wrapped=bytes(8192))))
    header, _ = parse_header(data)
    assert len(header.key_slots[0].key_uri) == 2048 and len(header.key_slots[0].wrapped_dek) == 8192


def test_sixteen_slots_and_256_pairs_parse() -> None:
    pairs = [(f"k{i:03d}", "v") for i in range(256)]
    data = raw_header(ctx=context_block(*pairs), slots=slot_block(*[slot_bytes()] * 16))
    header, _ = parse_header(data)
    assert len(header.key_slots) == 16 and len(header.encryption_context) == 256


@pytest.mark.parametrize("cut", range(0, len(raw_header(context_block(("a", "b"))))))
def test_header_cut_anywhere_is_rejected(cut: int) -> None:
    data = raw_header(context_block(("a", "b")))[:cut]
    expected = NotEncryptedError if cut == 0 else MalformedHeaderError
    with pytest.raises(expected):
        parse_header(data)
    with pytest.raises(expected):
        read_header(io.BytesIO(data))


class ReadLog(io.BytesIO):
    """Records every read size asked of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.asked.append(-1 if size is None else size)
        return super().read(size)


@pytest.mark.parametrize(
    "data",
    [
        raw_header(ctx_len=0xFFFFFFFF) + bytes(1 << 16),
        raw_header(slots_len=0xFFFFFFFF) + bytes(1 << 16),
        raw_header(ctx_len=0x7FFFFFFF),
    ],
    ids=["context_length", "slots_length", "context_length-short-input"],
)
def test_absurd_lengths_are_refused_before_reading_or_allocating(data: bytes) -> None:
    source = ReadLog(data)
    with pytest.raises(MalformedHeaderError):
        read_header(source)
    assert all(0 <= n <= MAX_HEADER_SIZE for n in source.asked)
    assert sum(source.asked) <= FIXED_PREFIX_SIZE + 4 + 16  # stopped right at the bad field
    with pytest.raises(MalformedHeaderError):
        header_length_hint(data[:FIXED_PREFIX_SIZE + 2 + 4 + 100])


def test_header_length_hint_needs_only_the_slot_length_field() -> None:
    data = raw_header(context_block(("a", "b")))
    slots_at = FIXED_PREFIX_SIZE + len(context_block(("a", "b")))
    assert header_length_hint(data[: slots_at + 3]) is None
    assert header_length_hint(data[: slots_at + 4]) == len(data)


def test_check_prefix_returns_version_and_context_length() -> None:
    assert check_prefix(raw_header(context_block(("a", "b")))) == (1, len(context_block(("a", "b"))))


# ---------------------------------------------------------------- writer-side validation


@pytest.mark.parametrize(
    ("context", "error"),
    [
        ({"": "x"}, ValueError),
        ({"a": 1}, TypeError),
        ({f"k{i}": "" for i in range(257)}, ValueError),
        ({"a": "x" * 65536}, ValueError),
        ({"a": "x" * 40000, "b": "y" * 40000}, ValueError),  # block over 64 KiB
    ],
    ids=["empty-key", "non-str", "257-pairs", "long-value", "big-block"],
)
def test_encode_context_refuses_what_a_reader_would_reject(context: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_context(context)


def test_encode_context_is_canonical() -> None:
    assert encode_context({"b": "1", "a": "2"}) == encode_context({"a": "2", "b": "1"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_uri": "", "wrap_algorithm": 1, "wrapped_dek": b"x"},
        {"key_uri": "l:" + "k" * 2047, "wrap_algorithm": 1, "wrapped_dek": b"x"},
        {"key_uri": "l:k", "wrap_algorithm": 0x10000, "wrapped_dek": b"x"},
        {"key_uri": "l:k", "wrap_algorithm": -1, "wrapped_dek": b"x"},
        {"key_uri": "l:k", "wrap_algorithm": 1, "wrapped_dek": b""},
        {"key_uri": "l:k", "wrap_algorithm": 1, "wrapped_dek": bytes(8193)},
    ],
)
def test_key_slot_bounds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MalformedHeaderError):
        KeySlot(**kwargs)


@pytest.mark.parametrize("count", [0, 17])
def test_pack_refuses_slot_counts_out_of_bounds(count: int) -> None:
    with pytest.raises(ValueError):
        Header({}, (SLOT,) * count).pack()


def test_key_slot_repr_hides_wrapped_key() -> None:
    assert bytes(range(40)).hex() not in repr(SLOT) and repr(bytes(range(40))) not in repr(SLOT)


# ---------------------------------------------------------------- size arithmetic

SIZES = load("size_arithmetic.json")  # FORMAT.md's table, as data


@pytest.mark.parametrize("case", SIZES["sizes"], ids=case_id)
def test_size_table_both_ways(case: dict[str, Any]) -> None:
    p, chunks, body = case["plaintextSize"], case["chunks"], case["bodySize"]
    assert chunk_count(p) == chunks
    assert body_size(p) == body
    assert plaintext_size(body) == p
    assert object_size(100, p) == 100 + body
    assert object_plaintext_size(100, 100 + body) == p


@pytest.mark.parametrize("case", SIZES["impossibleBodySizes"], ids=case_id)
def test_impossible_body_sizes(case: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        plaintext_size(case["bodySize"])


@pytest.mark.parametrize("case", SIZES["outOfRangePlaintextSizes"], ids=case_id)
def test_plaintext_size_bounds(case: dict[str, Any]) -> None:
    p = case["plaintextSize"]
    with pytest.raises(ValueError):
        chunk_count(p)
    with pytest.raises(ValueError):
        body_size(p)


def test_size_vectors_reach_the_bounds() -> None:
    """The table keeps its edge cases: the empty object and the largest plaintext."""
    sizes = {case["plaintextSize"] for case in SIZES["sizes"]}
    assert {0, CHUNK_SIZE, MAX_PLAINTEXT_SIZE} <= sizes
    assert {case["plaintextSize"] for case in SIZES["outOfRangePlaintextSizes"]} == {-1, MAX_PLAINTEXT_SIZE + 1}


@given(st.integers(min_value=0, max_value=MAX_PLAINTEXT_SIZE))
def test_body_size_inverts(p: int) -> None:
    b = body_size(p)
    assert plaintext_size(b) == p
    assert b - BODY_PREFIX_SIZE - p == TAG_SIZE * chunk_count(p)
    # the final chunk is short (possibly empty) and sits at a fixed offset
    final = p // CHUNK_SIZE
    assert chunk_offset(final) + (p - final * CHUNK_SIZE) + TAG_SIZE == b


@given(st.integers(min_value=0, max_value=10 * SEALED_CHUNK_SIZE))
def test_every_body_size_is_valid_for_exactly_one_plaintext_or_none(b: int) -> None:
    try:
        p = plaintext_size(b)
    except ValueError:
        rest = b - BODY_PREFIX_SIZE
        assert rest < TAG_SIZE or rest % SEALED_CHUNK_SIZE < TAG_SIZE
    else:
        assert body_size(p) == b


@given(st.integers(0, 50 * CHUNK_SIZE), st.integers(1, 5 * CHUNK_SIZE))
def test_chunk_span_covers_exactly_the_range(start: int, length: int) -> None:
    first, last = chunk_span(start, start + length)
    assert first * CHUNK_SIZE <= start < (first + 1) * CHUNK_SIZE
    assert last * CHUNK_SIZE < start + length <= (last + 1) * CHUNK_SIZE
    assert chunk_offset(last) - chunk_offset(first) == (last - first) * SEALED_CHUNK_SIZE


def test_chunk_offsets() -> None:
    assert chunk_offset(0) == 56
    assert chunk_offset(1) == 56 + 16_400
    assert chunk_offset(MAX_CHUNKS - 1) == 56 + (MAX_CHUNKS - 1) * 16_400


@pytest.mark.parametrize("size", [0, 1, 16383, 16384, 16385, 3 * 16384, 3 * 16384 + 5])
def test_sealed_chunk_end_matches_body_size(size: int) -> None:
    final = size // fmt.CHUNK_SIZE
    assert fmt.BODY_PREFIX_SIZE + fmt.sealed_chunk_end(final, size) == fmt.body_size(size)
    for index in range(final):
        assert fmt.sealed_chunk_end(index, size) == (index + 1) * fmt.SEALED_CHUNK_SIZE
