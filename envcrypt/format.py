"""The envcrypt object format, version 1: header layout, parsing and size arithmetic.

Pure functions only: nothing here does I/O or cryptography.  ``FORMAT.md`` at
the repository root is the normative description; this module implements it.

An object is ``header || body``.  The header is::

    immutable part (the C2SP context):
      magic            8 bytes   b"ENVCRYPT"
      format_version   1 byte    0x01
      suite_id         1 byte    0x01 = Cobblestone-256 (HKDF-SHA-512, AES-256-GCM, 16 KiB)
      flags            2 bytes   0x0000 (reserved, must be zero)
      context_length   4 bytes   big-endian, length of the context block (<= 64 KiB)
      context block    context_length bytes
    key slots (rewritten by rotation, not part of the C2SP context):
      slots_length     4 bytes   big-endian, length of the slot block (<= 64 KiB)
      slot block       slots_length bytes

and the body is a C2SP chunked-encryption message (salt, commitment, chunks)
whose C2SP ``context`` is the immutable part, byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import MalformedHeaderError, NotEncryptedError, UnsupportedVersionError

MAGIC = b"ENVCRYPT"
FORMAT_VERSION = 1
SUITE_COBBLESTONE_256 = 1
SUPPORTED_SUITES = frozenset({SUITE_COBBLESTONE_256})

CHUNK_SIZE = 16 * 1024  # plaintext bytes in every chunk but the final one
TAG_SIZE = 16  # AES-GCM tag bytes per chunk
SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
SALT_SIZE = 24
COMMITMENT_SIZE = 32
BODY_PREFIX_SIZE = SALT_SIZE + COMMITMENT_SIZE  # 56
MAX_CHUNKS = 1 << 38  # C2SP limit on the chunk counter
MAX_PLAINTEXT_SIZE = MAX_CHUNKS * CHUNK_SIZE - 1  # 4 PiB - 1

FIXED_PREFIX_SIZE = 16  # magic .. context_length
MAX_CONTEXT_BLOCK_SIZE = 64 * 1024
MAX_CONTEXT_PAIRS = 256
MAX_SLOTS_BLOCK_SIZE = 64 * 1024
MAX_SLOTS = 16
MAX_KEY_URI_SIZE = 2048
MAX_WRAPPED_KEY_SIZE = 8192
MAX_HEADER_SIZE = FIXED_PREFIX_SIZE + MAX_CONTEXT_BLOCK_SIZE + 4 + MAX_SLOTS_BLOCK_SIZE

_FIXED = struct.Struct(">8sBBHI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class KeySlot:
    """One wrapped copy of the data key: which master key, how it was wrapped, the wrapped bytes.

    ``key_uri`` names the exact master key version that wrapped the DEK.
    The wrapped bytes are ciphertext, but they are still left out of the repr.
    """

    key_uri: str
    wrap_algorithm: int
    wrapped_dek: bytes = field(repr=False)

    def __post_init__(self) -> None:
        uri = self.key_uri.encode("utf-8")
        if not 0 < len(uri) <= MAX_KEY_URI_SIZE:
            raise MalformedHeaderError("key URI length out of bounds")
        if not 0 <= self.wrap_algorithm <= 0xFFFF:
            raise MalformedHeaderError("wrap algorithm id out of bounds")
        if not 0 < len(self.wrapped_dek) <= MAX_WRAPPED_KEY_SIZE:
            raise MalformedHeaderError("wrapped key length out of bounds")


@dataclass(frozen=True)
class Header:
    """A parsed envcrypt header.  Holds no secret."""

    encryption_context: Mapping[str, str]
    key_slots: tuple[KeySlot, ...]
    version: int = FORMAT_VERSION
    suite_id: int = SUITE_COBBLESTONE_256

    @property
    def immutable(self) -> bytes:
        """The immutable part of the header: the C2SP ``context`` of the body.

        Encoded once per header (a read or write uses it for the cache keys, the key
        commitment and the body): the header is frozen and its context is treated as frozen.
        Kept beside the fields, not as one: equality, repr and ``with_slots`` see the fields.
        """
        known: bytes | None = self.__dict__.get(_IMMUTABLE)
        if known is None:
            if not self.encryption_context and self.version == FORMAT_VERSION \
                    and self.suite_id == SUITE_COBBLESTONE_256:
                object.__setattr__(self, _IMMUTABLE, _EMPTY_IMMUTABLE)
                return _EMPTY_IMMUTABLE
            block = encode_context(self.encryption_context)
            known = _FIXED.pack(MAGIC, self.version, self.suite_id, 0, len(block)) + block
            object.__setattr__(self, _IMMUTABLE, known)
        return known

    def pack(self) -> bytes:
        """Serialize the whole header (immutable part followed by the key slots)."""
        slots = encode_slots(self.key_slots)
        return self.immutable + _U32.pack(len(slots)) + slots

    def with_slots(self, key_slots: Sequence[KeySlot]) -> Header:
        header = Header(self.encryption_context, tuple(key_slots), self.version, self.suite_id)
        immutable = self.__dict__.get(_IMMUTABLE)
        if immutable is not None:  # same context, version and suite: same immutable part
            object.__setattr__(header, _IMMUTABLE, immutable)
        return header


#: where a Header keeps its encoded immutable part
_IMMUTABLE = "_immutable"


def encode_context(context: Mapping[str, str]) -> bytes:
    """Encode an encryption context canonically: pairs sorted by key, UTF-8, u16 lengths."""
    if len(context) > MAX_CONTEXT_PAIRS:
        raise ValueError(f"an encryption context holds at most {MAX_CONTEXT_PAIRS} pairs")
    parts = [_U16.pack(len(context))]
    for key in sorted(context):
        value = context[key]
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("encryption context keys and values must be str")
        if not key:
            raise ValueError("encryption context keys must not be empty")
        for text in (key, value):
            raw = text.encode("utf-8")
            if len(raw) > 0xFFFF:
                raise ValueError("encryption context entries are at most 65535 bytes")
            parts.append(_U16.pack(len(raw)))
            parts.append(raw)
    block = b"".join(parts)
    if len(block) > MAX_CONTEXT_BLOCK_SIZE:
        raise ValueError(f"an encryption context encodes to at most {MAX_CONTEXT_BLOCK_SIZE} bytes")
    return block


def encode_slots(slots: Sequence[KeySlot]) -> bytes:
    if not 1 <= len(slots) <= MAX_SLOTS:
        raise ValueError(f"an object has 1 to {MAX_SLOTS} key slots")
    parts = [_U16.pack(len(slots))]
    for slot in slots:
        uri = slot.key_uri.encode("utf-8")
        parts += [_U16.pack(len(uri)), uri, _U16.pack(slot.wrap_algorithm)]
        parts += [_U16.pack(len(slot.wrapped_dek)), slot.wrapped_dek]
    block = b"".join(parts)
    if len(block) > MAX_SLOTS_BLOCK_SIZE:
        raise ValueError(f"the key slots encode to at most {MAX_SLOTS_BLOCK_SIZE} bytes")
    return block


class _Cursor:
    """Bounds-checked reads from a header block; every overrun is a MalformedHeaderError."""

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None) -> None:
        # bytes, not a view: slicing and unpacking bytes is what a header read spends its time on
        self._data = data if isinstance(data, bytes) else bytes(data)
        self.pos = start
        self._end = len(self._data) if end is None else end

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self._end:
            raise MalformedHeaderError("header field runs past the end of the header")
        out = self._data[self.pos : end]
        self.pos = end
        return out

    def u16(self) -> int:
        at = self.pos
        if at + 2 > self._end:
            raise MalformedHeaderError("header field runs past the end of the header")
        self.pos = at + 2
        return int(_U16.unpack_from(self._data, at)[0])

    def text(self, what: str) -> str:
        raw = self.take(self.u16())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedHeaderError(f"{what} is not valid UTF-8") from None

    def done(self, what: str) -> None:
        if self.pos != self._end:
            raise MalformedHeaderError(f"unexpected bytes at the end of the {what}")


def _decode_context(block: bytes | memoryview, start: int = 0, end: int | None = None) -> dict[str, str]:
    cur = _Cursor(block, start, end)
    count = cur.u16()
    if count > MAX_CONTEXT_PAIRS:
        raise MalformedHeaderError("too many encryption context pairs")
    context: dict[str, str] = {}
    previous: str | None = None
    for _ in range(count):
        key = cur.text("an encryption context key")
        value = cur.text("an encryption context value")
        if not key or (previous is not None and key <= previous):
            raise MalformedHeaderError("encryption context keys are not sorted, unique and non-empty")
        context[key] = value
        previous = key
    cur.done("encryption context")
    return context


def _decode_slots(block: bytes | memoryview, start: int = 0, end: int | None = None) -> tuple[KeySlot, ...]:
    # the _Cursor rules, inlined (every read of every object parses its slots): the same
    # bounds, in the same order, with the same errors
    data = block if isinstance(block, bytes) else bytes(block)
    end = len(data) if end is None else end
    pos = start + 2
    if pos > end:
        raise MalformedHeaderError(_OVERRUN)
    count = _U16.unpack_from(data, start)[0]
    if not 1 <= count <= MAX_SLOTS:
        raise MalformedHeaderError("key slot count out of bounds")
    slots = []
    for _ in range(count):
        if pos + 2 > end:
            raise MalformedHeaderError(_OVERRUN)
        at, pos = pos + 2, pos + 2 + _U16.unpack_from(data, pos)[0]
        if pos > end:
            raise MalformedHeaderError(_OVERRUN)
        try:
            uri = data[at:pos].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedHeaderError("a key URI is not valid UTF-8") from None
        if pos + 2 > end:
            raise MalformedHeaderError(_OVERRUN)
        algorithm = _U16.unpack_from(data, pos)[0]
        if pos + 4 > end:
            raise MalformedHeaderError(_OVERRUN)
        at, pos = pos + 4, pos + 4 + _U16.unpack_from(data, pos + 2)[0]
        if pos > end:
            raise MalformedHeaderError(_OVERRUN)
        slots.append(KeySlot(uri, algorithm, data[at:pos]))
    if pos != end:
        raise MalformedHeaderError("unexpected bytes at the end of the key slots")
    return tuple(slots)


_OVERRUN = "header field runs past the end of the header"
#: the context block of an empty encryption context (a count of zero)
_EMPTY_CONTEXT = _U16.pack(0)
#: the immutable part of a version 1, Cobblestone-256 header without an encryption context
_EMPTY_IMMUTABLE = _FIXED.pack(MAGIC, FORMAT_VERSION, SUITE_COBBLESTONE_256, 0, len(_EMPTY_CONTEXT)) + _EMPTY_CONTEXT


def check_prefix(prefix: bytes | memoryview) -> tuple[int, int]:
    """Validate the fixed 16-byte prefix; return ``(version, context_length)``.

    Raises NotEncryptedError without the magic, UnsupportedVersionError for an
    unknown version or suite, MalformedHeaderError for bad flags or lengths.
    """
    prefix = bytes(prefix[:FIXED_PREFIX_SIZE])
    head = prefix[: len(MAGIC)]
    if head != MAGIC:
        if head and len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise MalformedHeaderError("input ends inside the envcrypt magic")
        raise NotEncryptedError("input is not an envcrypt object (no envcrypt magic)")
    if len(prefix) < FIXED_PREFIX_SIZE:
        raise MalformedHeaderError("input ends inside the envcrypt header")
    _, version, suite, flags, context_length = _FIXED.unpack(prefix)
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(f"envcrypt format version {version} is not supported")
    if suite not in SUPPORTED_SUITES:
        raise UnsupportedVersionError(f"envcrypt suite {suite} is not supported")
    if flags != 0:
        raise MalformedHeaderError("reserved header flags are set")
    if context_length > MAX_CONTEXT_BLOCK_SIZE:
        raise MalformedHeaderError("encryption context length out of bounds")
    return version, context_length


def header_length_hint(data: bytes | memoryview) -> int | None:
    """Total header length if ``data`` holds enough of it to tell, else None.

    Validates what it reads, so an absurd length is refused before a caller
    allocates or fetches anything for it.
    """
    _, context_length = check_prefix(data)
    slots_at = FIXED_PREFIX_SIZE + context_length
    if len(data) < slots_at + 4:
        return None
    slots_length: int = _U32.unpack(bytes(data[slots_at : slots_at + 4]))[0]
    if slots_length > MAX_SLOTS_BLOCK_SIZE:
        raise MalformedHeaderError("key slot block length out of bounds")
    return slots_at + 4 + slots_length


def parse_header(data: bytes | memoryview) -> tuple[Header, int]:
    """Parse a header from the start of ``data``; return it and its length in bytes."""
    total = header_length_hint(data)  # checks the fixed prefix (magic, version, suite, flags, lengths)
    if total is None or len(data) < total:
        raise MalformedHeaderError("input ends inside the envcrypt header")
    raw = bytes(memoryview(data)[:total])  # one copy, parsed in place from here
    source = data.obj if isinstance(data, memoryview) else data
    if not isinstance(source, bytes) and header_length_hint(raw) != total:
        # memory that may change under us (an mmap, a bytearray): the copy is what counts
        raise MalformedHeaderError("the envcrypt header changed while it was read")
    _, version, _, _, context_length = _FIXED.unpack_from(raw)
    context_end = FIXED_PREFIX_SIZE + context_length
    if raw[FIXED_PREFIX_SIZE:context_end] == _EMPTY_CONTEXT:
        # the one encoding of an empty context: the immutable part is these bytes (the fixed
        # prefix was checked above: magic, this version, suite 1, no flags, this length)
        slots = _decode_slots(raw, context_end + 4, total)
        header = Header({}, slots, version, SUITE_COBBLESTONE_256)
        object.__setattr__(header, _IMMUTABLE, raw[:context_end])
        return header, total
    context = _decode_context(raw, FIXED_PREFIX_SIZE, context_end)
    slots = _decode_slots(raw, context_end + 4, total)
    header = Header(context, slots, version, SUITE_COBBLESTONE_256)
    if header.immutable != raw[:context_end]:
        raise MalformedHeaderError("encryption context is not canonically encoded")
    return header, total


# ---------------------------------------------------------------- size arithmetic


def chunk_count(plaintext_size: int) -> int:
    """Number of chunks of a message: the final chunk is always short, possibly empty."""
    if not 0 <= plaintext_size <= MAX_PLAINTEXT_SIZE:
        raise ValueError("plaintext size out of bounds")
    return plaintext_size // CHUNK_SIZE + 1


def body_size(plaintext_size: int) -> int:
    """Ciphertext size of the C2SP body (salt, commitment, chunks) for a plaintext size."""
    return BODY_PREFIX_SIZE + plaintext_size + chunk_count(plaintext_size) * TAG_SIZE


def plaintext_size(body_size_: int) -> int:
    """Plaintext size for a C2SP body size; IntegrityError-free: raises ValueError if impossible.

    Callers turn the ValueError into an IntegrityError (truncation) at the boundary.
    """
    rest = body_size_ - BODY_PREFIX_SIZE
    if rest < TAG_SIZE:
        raise ValueError("body too short to hold a final chunk")
    full, final = divmod(rest, SEALED_CHUNK_SIZE)
    if final < TAG_SIZE:
        raise ValueError("body length ends inside a tag or at a chunk boundary")
    size = full * CHUNK_SIZE + final - TAG_SIZE
    if size > MAX_PLAINTEXT_SIZE:
        raise ValueError("body length exceeds the C2SP maximum")
    return size


def object_size(header_size: int, plaintext_size_: int) -> int:
    """Total stored size of an object: header plus body."""
    return header_size + body_size(plaintext_size_)


def object_plaintext_size(header_size: int, stored_size: int) -> int:
    """Plaintext size of a stored object of ``stored_size`` bytes with a header of ``header_size``."""
    return plaintext_size(stored_size - header_size)


def chunk_offset(chunk_index: int) -> int:
    """Offset of a sealed chunk from the start of the body."""
    return BODY_PREFIX_SIZE + chunk_index * SEALED_CHUNK_SIZE


def sealed_chunk_end(chunk_index: int, plaintext_size_: int) -> int:
    """Where sealed chunk ``chunk_index`` ends, counted from the first sealed chunk (after salt and commitment)."""
    if chunk_index == plaintext_size_ // CHUNK_SIZE:  # the short final chunk
        return chunk_index * SEALED_CHUNK_SIZE + plaintext_size_ % CHUNK_SIZE + TAG_SIZE
    return (chunk_index + 1) * SEALED_CHUNK_SIZE


def chunk_span(start: int, end: int) -> tuple[int, int]:
    """Chunk indexes ``[first, last]`` holding plaintext bytes ``[start, end)`` (end > start)."""
    return start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
