"""Rewrap: give an object new key slots without touching its body.

The key slots are not part of the C2SP context, so replacing them leaves the
body valid byte for byte: ``rewrap`` unwraps the DEK through any slot this
process can open, checks it against the body's key commitment, wraps it under
the new master key(s) and returns ``new header || the same body bytes``.

``rewrap_header`` does the same for a header alone (for storage layers that
rewrite only the head of an object); the object's first bytes after the header
are required, as ``body_prefix`` (or after the header bytes), so that the DEK is
checked against the key commitment before it is wrapped again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from .chunked import open_message
from .envelope import _slot_deks, normalize_key_uris, wrap_dek
from .errors import IntegrityError, WrongKeyError
from .format import BODY_PREFIX_SIZE, MAX_HEADER_SIZE, Header, parse_header
from .keys.base import split_key_uri

__all__ = ["rewrap", "rewrap_header"]

KeyUriArg = str | Sequence[str]


def _checked_dek(
    header: Header, body_prefix: bytes, options: dict[str, Any], new_schemes: list[str]
) -> bytes:
    """The DEK of the first slot that passes the body's key commitment (never an unchecked one)."""
    if len(body_prefix) < BODY_PREFIX_SIZE:
        raise IntegrityError()
    error: Exception | None = None
    for dek, _ in _slot_deks(header, options, new_schemes):
        try:
            open_message(dek, header.immutable, body_prefix[:BODY_PREFIX_SIZE])
        except WrongKeyError as exc:
            error = exc
            continue
        return dek
    assert error is not None
    raise error


def rewrap_header(
    header: bytes | bytearray | memoryview | Header,
    new_key_uris: KeyUriArg,
    *,
    body_prefix: bytes | None = None,
    **resolver_options: Any,
) -> bytes:
    """The packed header with key slots for ``new_key_uris`` (the old slots are dropped).

    ``header`` is a :class:`Header` or the object's leading bytes; when those bytes
    run at least 56 bytes past the header, they supply ``body_prefix``.  The body
    prefix is required: the DEK is wrapped again only after it passed the body's key
    commitment (TypeError without one, WrongKeyError when no slot's DEK passes).
    """
    if isinstance(header, Header):
        parsed = header
    else:
        view = memoryview(header).cast("B")
        parsed, size = parse_header(view[:MAX_HEADER_SIZE])
        if body_prefix is None and len(view) >= size + BODY_PREFIX_SIZE:
            body_prefix = bytes(view[size : size + BODY_PREFIX_SIZE])
    if body_prefix is None:
        raise TypeError(
            "rewrap_header needs the body's first 56 bytes (body_prefix=, or pass them after the "
            "header bytes) to check the DEK against the key commitment before wrapping it again"
        )
    uris = normalize_key_uris(new_key_uris)
    new_schemes = [split_key_uri(u)[0] for u in uris]
    old_schemes = []
    for slot in parsed.key_slots:
        with contextlib.suppress(ValueError):
            old_schemes.append(split_key_uri(slot.key_uri)[0])
    dek = _checked_dek(parsed, body_prefix, resolver_options, new_schemes)
    slots = wrap_dek(dek, uris, parsed.encryption_context, resolver_options, also_in_play=old_schemes)
    return parsed.with_slots(slots).pack()


def rewrap(blob: bytes | bytearray | memoryview, new_key_uris: KeyUriArg, **resolver_options: Any) -> bytes:
    """The object with new key slots for ``new_key_uris``; the body bytes are unchanged."""
    view = memoryview(blob).cast("B")
    _, size = parse_header(view[:MAX_HEADER_SIZE])
    if len(view) < size + BODY_PREFIX_SIZE:
        raise IntegrityError()
    head = rewrap_header(view[: size + BODY_PREFIX_SIZE], new_key_uris, **resolver_options)
    return head + bytes(view[size:])
