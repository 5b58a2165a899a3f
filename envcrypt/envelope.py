"""Envelope encryption of whole objects: header + C2SP body, in one call.

``encrypt`` makes a fresh DEK, wraps it in one key slot per master key, and
seals the body with the DEK; ``decrypt`` unwraps the DEK from the first slot a
resolver can open, checks the key commitment, and opens the body.  Streaming
and random access live in :mod:`envcrypt.streams`; this module holds what
both share (making and recovering DEKs from headers).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from . import _buffers
from ._secret import SecretBytes
from .chunked import DEK_SIZE, ChunkCipher, new_message
from .errors import (
    ContextMismatchError,
    EnvcryptError,
    IntegrityError,
    InvalidKeyUriError,
    MalformedHeaderError,
    UnknownKeySchemeError,
)
from .format import (
    BODY_PREFIX_SIZE,
    CHUNK_SIZE,
    FIXED_PREFIX_SIZE,
    MAX_HEADER_SIZE,
    MAX_SLOTS,
    SEALED_CHUNK_SIZE,
    Header,
    KeySlot,
    body_size,
    header_length_hint,
    parse_header,
    plaintext_size,
)
from .keys.base import check_options, default_key_uri, get_resolver, split_key_uri
from .keys.cache import CACHE_OPTION, DekCache, StreamCharge, choose_cache, options_key, resolver_options_only
from .slots import TrustedKeysArg, key_name, open_slots, trusted_key_list

__all__ = ["encrypt", "decrypt", "inspect", "ObjectInfo", "KeyUris", "default_trusted_keys"]

KeyUris = str | Sequence[str] | None


def normalize_key_uris(key_uri: KeyUris) -> list[str]:
    """One or more key URIs as a de-duplicated list; None means the default key."""
    if key_uri is None:
        uris = [default_key_uri()]
    elif isinstance(key_uri, str):
        uris = [key_uri]
    elif isinstance(key_uri, Sequence) and not isinstance(key_uri, (bytes, bytearray)):
        if not all(isinstance(u, str) for u in key_uri):
            raise TypeError("key_uri is a str or a sequence of str")
        uris = list(dict.fromkeys(key_uri))
    else:
        raise TypeError(f"key_uri is a str or a sequence of str, not {type(key_uri).__name__}")
    if not uris:
        raise InvalidKeyUriError("at least one key URI is needed")
    if len(uris) > MAX_SLOTS:
        raise InvalidKeyUriError(f"an object has at most {MAX_SLOTS} key slots, not {len(uris)}")
    for uri in uris:
        split_key_uri(uri)
    return uris


def wrap_dek(
    dek: bytes,
    key_uris: Sequence[str],
    encryption_context: Mapping[str, str],
    options: Mapping[str, Any],
    *,
    also_in_play: Sequence[str] = (),
) -> tuple[KeySlot, ...]:
    """Wrap ``dek`` once per master key (never cached: rewrap relies on this).

    ``also_in_play`` names further schemes whose options may be in ``options``.
    """
    options = resolver_options_only(options)
    if options:  # (check_options accepts no options at once)
        check_options({split_key_uri(u)[0] for u in key_uris} | set(also_in_play), options)
    slots = []
    for uri in key_uris:
        resolver = get_resolver(split_key_uri(uri)[0], **options)
        slots.append(resolver.wrap(uri, dek, encryption_context))
    return tuple(slots)


def _cache_for(schemes: Sequence[str], options: Mapping[str, Any]) -> tuple[DekCache | None, dict[str, Any]]:
    plain = resolver_options_only(options)
    setting = options.get(CACHE_OPTION)
    if setting is not None:  # given: the resolvers' default is not asked
        return choose_cache(setting, []), plain
    resolvers = []
    for scheme in dict.fromkeys(schemes):
        try:
            resolvers.append(get_resolver(scheme, **plain))
        except UnknownKeySchemeError:
            continue  # reported when (and if) a slot of that scheme is tried
    return choose_cache(setting, resolvers), plain


def new_header(
    key_uri: KeyUris,
    encryption_context: Mapping[str, str] | None,
    options: Mapping[str, Any],
    plaintext_size: int | None = None,
    *,
    also_in_play: Sequence[str] = (),
) -> tuple[bytes, Header]:
    """A DEK and a header whose key slots wrap it.

    The DEK is fresh, or taken from the DEK cache when it is on for these keys;
    ``plaintext_size``, when known, is charged to the cache entry's byte budget.
    A streaming write, whose size is known only at its end, uses
    :func:`new_stream_header` and hands the charge it returns to its writer.
    """
    dek, header, _ = _make_header(key_uri, encryption_context, options, plaintext_size, also_in_play)
    return dek, header


def new_stream_header(
    key_uri: KeyUris,
    encryption_context: Mapping[str, str] | None,
    options: Mapping[str, Any],
    *,
    also_in_play: Sequence[str] = (),
) -> tuple[bytes, Header, StreamCharge | None]:
    """:func:`new_header` for a streaming write: also the charge to call with the bytes the
    writer sealed when it closes (None when the DEK did not come from the DEK cache); pass it
    as ``EncryptingWriter(..., charge=)``."""
    return _make_header(key_uri, encryption_context, options, None, also_in_play)


def _make_header(
    key_uri: KeyUris,
    encryption_context: Mapping[str, str] | None,
    options: Mapping[str, Any],
    plaintext_size: int | None,
    also_in_play: Sequence[str],
) -> tuple[bytes, Header, StreamCharge | None]:
    context = dict(encryption_context or {})
    uris = normalize_key_uris(key_uri)
    cache, plain = _cache_for([split_key_uri(u)[0] for u in uris], options)
    cache_key = None
    if cache is not None:
        unslotted = Header(context, ())  # its immutable part, encoded once, passes to the header made
        cache_key = (tuple(uris), unslotted.immutable, options_key(plain))
        hit = cache.take_encryption(cache_key, plaintext_size)
        if hit is not None:
            _recheck(cache, [slot.key_uri for slot in hit[1]], plain)
            charge = StreamCharge(cache, cache_key, hit[0]) if plaintext_size is None else None
            return hit[0], unslotted.with_slots(hit[1]), charge
    dek = SecretBytes(os.urandom(DEK_SIZE))  # never shown by a repr (tracebacks with locals)
    slots = wrap_dek(dek, uris, context, plain, also_in_play=also_in_play)
    header = Header(context, slots) if cache is None else unslotted.with_slots(slots)
    charge = None
    if cache is not None:
        cache.put_encryption(cache_key, dek, slots, plaintext_size)
        if plaintext_size is None:
            charge = StreamCharge(cache, cache_key, dek)
    return dek, header, charge


def _recheck(cache: DekCache, uris: Sequence[str], options: Mapping[str, Any]) -> None:
    """Before a cached DEK serves another write: every resolver that can tell cheaply whether
    the exact key versions of the cached slots still permit wrapping (``check_usable``, e.g. the
    local vault, whose state another process may have changed) is asked; a refusal drops the
    key's cached DEKs and is raised."""
    for uri in uris:
        check = getattr(get_resolver(split_key_uri(uri)[0], **options), "check_usable", None)
        if check is None:
            continue
        try:
            check(uri)
        except EnvcryptError:
            cache.forget(key_name(uri))
            raise


def check_context(header: Header, expected: Mapping[str, str] | None) -> None:
    """Every pair the caller expects must be in the object's authenticated context."""
    if not expected:
        return
    for key, value in expected.items():
        if header.encryption_context.get(key) != value:
            raise ContextMismatchError(f"encryption context does not match on key {key!r}")


def default_trusted_keys() -> list[str]:
    """What the bytes and stream API trusts when ``trusted_keys`` is not given: the key that
    ``encrypt`` uses by default (``$ENVCRYPT_KEY_URI``, else ``local:default``), every version."""
    return [default_key_uri()]


def open_body(
    header: Header, prefix: bytes, trusted_keys: TrustedKeysArg, options: Mapping[str, Any]
) -> ChunkCipher:
    """The chunk cipher of an object, through the first slot that names a trusted key and
    passes the key commitment (:func:`envcrypt.slots.open_slots`)."""
    trusted = trusted_key_list(trusted_keys, default_trusted_keys() if trusted_keys is None else ())
    return open_slots(header, prefix, trusted, options).cipher


# ---------------------------------------------------------------- one-shot API


def encrypt(
    data: bytes | bytearray | memoryview,
    key_uri: KeyUris = None,
    *,
    encryption_context: Mapping[str, str] | None = None,
    **resolver_options: Any,
) -> bytes:
    """Encrypt ``data`` into a new envcrypt object.

    ``key_uri`` is one master key URI or a list (one key slot each; any one
    opens the object); None uses ``$ENVCRYPT_KEY_URI`` or ``local:default``.
    ``encryption_context`` is authenticated, stored in clear, and bound to the body.
    """
    if isinstance(data, str) or not _is_buffer(data):
        hint = " (encode text first: text.encode('utf-8'))" if isinstance(data, str) else ""
        raise TypeError(f"data must be bytes (or another bytes-like object), not {type(data).__name__}{hint}")
    return seal_object(data, key_uri, encryption_context, resolver_options)


def _is_buffer(data: object) -> bool:
    try:
        memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def seal_object(
    data: bytes | bytearray | memoryview,
    key_uri: KeyUris,
    encryption_context: Mapping[str, str] | None,
    resolver_options: Mapping[str, Any],
    also_in_play: Sequence[str] = (),
) -> bytes:
    """:func:`encrypt`; ``also_in_play`` names further schemes whose options may be in
    ``resolver_options`` (a re-encryption from one key service to another)."""
    plaintext = memoryview(data).cast("B")
    dek, header = new_header(key_uri, encryption_context, resolver_options, len(plaintext),
                             also_in_play=also_in_play)
    head = header.pack()
    prefix, cipher = new_message(dek, header.immutable)
    if len(plaintext) < CHUNK_SIZE:  # one chunk: sealed in one call, three pieces joined
        return b"".join((head, prefix, cipher.seal_single(plaintext)))
    total = len(head) + body_size(len(plaintext))
    result, out = _buffers.new_bytes(total)
    out[: len(head)] = head
    out[len(head) : len(head) + BODY_PREFIX_SIZE] = prefix
    cipher.seal(0, plaintext, out[len(head) + BODY_PREFIX_SIZE :], final=True)
    return _buffers.finish(result)


def decrypt(
    blob: bytes | bytearray | memoryview,
    *,
    trusted_keys: TrustedKeysArg = None,
    encryption_context: Mapping[str, str] | None = None,
    **resolver_options: Any,
) -> bytes:
    """Decrypt a whole envcrypt object; returns the plaintext only if all of it authenticates.

    ``trusted_keys`` (key URIs, with or without a version) are the master keys this
    reader accepts: the object opens only through a key slot naming one of them
    (``UntrustedKeyError`` otherwise).  None trusts the default key only
    (``$ENVCRYPT_KEY_URI``, else ``local:default``), the one ``encrypt`` uses by default.
    """
    view = memoryview(blob).cast("B")
    header, header_size = parse_header(view[:MAX_HEADER_SIZE])
    check_context(header, encryption_context)
    body = view[header_size:]
    try:
        size = plaintext_size(len(body))
    except ValueError:
        raise IntegrityError() from None
    cipher = open_body(header, bytes(body[:BODY_PREFIX_SIZE]), trusted_keys, resolver_options)
    return open_whole_body(cipher, body, size)


#: sealed chunks copied at a time from memory another process may change (an mmap)
_SHARED_SPAN_CHUNKS = 256


def open_whole_body(cipher: ChunkCipher, body: memoryview, size: int) -> bytes:
    """The plaintext of a whole body (``size`` from its length), returned only if all of it
    authenticates.

    Process-private memory (bytes, bytearray) is decrypted in place.  Anything else (a view of
    an mmap of a file in storage) is copied span by span into a private buffer first: OpenSSL
    reads a chunk twice (GHASH, then CTR), and a storage writer changing the bytes in between
    would release plaintext that the tag did not authenticate.
    """
    sealed = body[BODY_PREFIX_SIZE:]
    if size < CHUNK_SIZE:  # one chunk: opened in one call (a private copy of shared memory first)
        return cipher.open_single(sealed if _buffers.is_private(body) else bytes(sealed))
    result, out = _buffers.new_bytes(size)
    if _buffers.is_private(body):
        cipher.open(0, sealed, out, final=True)
        return _buffers.finish(result)
    step = _SHARED_SPAN_CHUNKS * SEALED_CHUNK_SIZE
    private = bytearray(min(step, len(sealed)))
    try:
        for first in range(0, max(len(sealed), 1), step):  # an empty body still has its final chunk
            span = sealed[first : first + step]
            at = first // SEALED_CHUNK_SIZE
            local = memoryview(private)[: len(span)]
            local[:] = span
            cipher.open(at, local, out[at * CHUNK_SIZE :], final=first + step >= len(sealed))
    except IntegrityError:
        _buffers.zero(out)
        raise
    return _buffers.finish(result)


# ---------------------------------------------------------------- inspect


@dataclass(frozen=True)
class ObjectInfo:
    """What an envcrypt header says, without any key: never the DEK."""

    version: int
    suite_id: int
    encryption_context: Mapping[str, str]
    key_slots: tuple[KeySlot, ...]
    header_size: int
    stored_size: int | None
    plaintext_size: int | None

    @property
    def key_uris(self) -> list[str]:
        return [slot.key_uri for slot in self.key_slots]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.version,
            "suite": "Cobblestone-256" if self.suite_id == 1 else self.suite_id,
            "encryption_context": dict(self.encryption_context),
            "key_slots": [
                {"key_uri": s.key_uri, "wrap_algorithm": s.wrap_algorithm, "wrapped_size": len(s.wrapped_dek)}
                for s in self.key_slots
            ],
            "header_size": self.header_size,
            "stored_size": self.stored_size,
            "plaintext_size": self.plaintext_size,
        }


def read_header(fileobj: IO[bytes]) -> tuple[Header, int]:
    """Read and parse a header from the current position of a binary file object."""
    data = _read_up_to(fileobj, FIXED_PREFIX_SIZE + 4)
    while True:
        needed = header_length_hint(data)
        if needed is None:
            # the slot length field sits right after the context block
            more = FIXED_PREFIX_SIZE + int.from_bytes(data[12:16], "big") + 4 - len(data)
        else:
            more = needed - len(data)
        if more <= 0:
            return parse_header(data)
        chunk = _read_up_to(fileobj, more)
        if len(chunk) < more:
            raise MalformedHeaderError("input ends inside the envcrypt header")
        data += chunk


def _read_up_to(fileobj: IO[bytes], n: int) -> bytes:
    parts = []
    while n > 0:
        chunk = fileobj.read(n)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def inspect(blob_or_fileobj: bytes | bytearray | memoryview | IO[bytes]) -> ObjectInfo:
    """Header fields, key URIs and sizes of an object; reads only the header of a file.

    ``plaintext_size`` is what the stored length implies; it is authenticated
    only when the object is read to its end.
    """
    if isinstance(blob_or_fileobj, (bytes, bytearray, memoryview)):
        view = memoryview(blob_or_fileobj).cast("B")
        header, header_size = parse_header(view[:MAX_HEADER_SIZE])
        stored: int | None = len(view)
    else:
        fileobj = blob_or_fileobj
        start = fileobj.tell() if fileobj.seekable() else 0
        header, header_size = read_header(fileobj)
        stored = None
        if fileobj.seekable():
            stored = fileobj.seek(0, io.SEEK_END) - start
            fileobj.seek(start + header_size)
    size: int | None = None
    if stored is not None:
        try:
            size = plaintext_size(stored - header_size)
        except ValueError:
            size = None
    return ObjectInfo(
        header.version, header.suite_id, dict(header.encryption_context), header.key_slots,
        header_size, stored, size,
    )
