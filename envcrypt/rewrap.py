"""Rewrap: give an object new key slots, without handing its data key to a new key.

The key slots are not part of the C2SP context, so replacing them leaves the
body valid byte for byte.  ``rewrap`` opens the DEK through a slot naming a
*trusted* key (checked against the body's key commitment), then:

* when every new key already holds the object's DEK (each new key is, or is a
  version of, a key named by one of the object's trusted slots: a rotation
  ``local:acme/1`` -> ``local:acme`` newest version, or dropping a slot), it
  wraps the same DEK under the new keys and returns ``new header || the same
  body bytes``;
* otherwise it re-encrypts the object under a **fresh DEK**.  A DEK may be
  shared by many objects (the DEK cache), so wrapping it under a key that did
  not hold it would open every sibling object to that key, and keep them
  readable after the old key is destroyed.

``rewrap_header`` does the slot-only case for a header alone (for storage
layers that rewrite only the head of an object); it refuses a new key that does
not hold the DEK (``KeyAccessDeniedError``): only a re-encryption can do that.
The object's first bytes after the header are required, as ``body_prefix`` (or
after the header bytes), so that the DEK is checked against the key commitment
before it is wrapped again.

Trusted keys default to the new keys' names (a rotation within one key); a
rewrap from one key to another names the old key in ``trusted_keys``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from .envelope import normalize_key_uris, open_whole_body, seal_object, wrap_dek
from .errors import IntegrityError, KeyAccessDeniedError
from .format import BODY_PREFIX_SIZE, MAX_HEADER_SIZE, Header, KeySlot, parse_header, plaintext_size
from .keys.base import get_resolver, split_key_uri
from .keys.cache import CACHE_OPTION, resolver_options_only
from .slots import TrustedKeysArg, admits, key_name, open_slots, trusted_key_list

__all__ = ["rewrap", "rewrap_header", "holds_dek", "rewrap_trust"]

KeyUriArg = str | Sequence[str]


def rewrap_trust(trusted_keys: TrustedKeysArg, new_key_uris: Sequence[str]) -> tuple[str, ...]:
    """The keys a rewrap trusts: ``trusted_keys``, else the new keys' names (a rotation)."""
    return trusted_key_list(trusted_keys, [key_name(u) for u in new_key_uris])


def holds_dek(new_key_uris: Sequence[str], trusted_slots: Sequence[KeySlot], options: Mapping[str, Any]) -> bool:
    """Whether every new key already holds the DEK: it names (a version of) the key of one of
    the object's trusted slots, so wrapping the DEK under it gives it nothing new."""
    plain = resolver_options_only(options)
    for uri in new_key_uris:
        scheme = split_key_uri(uri)[0]
        name = key_name(uri)
        resolver = get_resolver(scheme, **plain)
        if not any(split_key_uri(s.key_uri)[0] == scheme and admits(resolver, name, s.key_uri)
                   for s in trusted_slots):
            return False
    return True


def _schemes(header: Header) -> list[str]:
    out = []
    for slot in header.key_slots:
        with contextlib.suppress(ValueError):
            out.append(split_key_uri(slot.key_uri)[0])
    return out


def rewrap_header(
    header: bytes | bytearray | memoryview | Header,
    new_key_uris: KeyUriArg,
    *,
    body_prefix: bytes | None = None,
    trusted_keys: TrustedKeysArg = None,
    **resolver_options: Any,
) -> bytes:
    """The packed header with key slots for ``new_key_uris`` (the old slots are dropped).

    ``header`` is a :class:`Header` or the object's leading bytes; when those bytes
    run at least 56 bytes past the header, they supply ``body_prefix``.  The body
    prefix is required: the DEK is wrapped again only after it passed the body's key
    commitment (TypeError without one, WrongKeyError when no trusted slot's DEK
    passes).  KeyAccessDeniedError when a new key does not already hold the DEK.
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
    trusted = rewrap_trust(trusted_keys, uris)
    opened = open_slots(parsed, body_prefix, trusted, resolver_options, also_in_play=new_schemes,
                        rewriting=True)
    if not holds_dek(uris, opened.trusted_slots, resolver_options):
        raise KeyAccessDeniedError(
            f"rewrapping to {', '.join(uris)} would hand this object's data key to a key that does not "
            "hold it (the DEK may be shared with other objects): re-encrypt instead (envcrypt.rewrap does)")
    slots = wrap_dek(opened.dek, uris, parsed.encryption_context, resolver_options, also_in_play=_schemes(parsed))
    return parsed.with_slots(slots).pack()


def rewrap(
    blob: bytes | bytearray | memoryview,
    new_key_uris: KeyUriArg,
    *,
    trusted_keys: TrustedKeysArg = None,
    **resolver_options: Any,
) -> bytes:
    """The object under ``new_key_uris``: new key slots and the same body bytes when the new
    keys already hold its DEK (a rotation), else re-encrypted under a fresh DEK."""
    view = memoryview(blob).cast("B")
    header, size = parse_header(view[:MAX_HEADER_SIZE])
    if len(view) < size + BODY_PREFIX_SIZE:
        raise IntegrityError()
    uris = normalize_key_uris(new_key_uris)
    trusted = rewrap_trust(trusted_keys, uris)
    opened = open_slots(header, bytes(view[size : size + BODY_PREFIX_SIZE]), trusted, resolver_options,
                        also_in_play=[split_key_uri(u)[0] for u in uris], rewriting=True)
    if holds_dek(uris, opened.trusted_slots, resolver_options):
        slots = wrap_dek(opened.dek, uris, header.encryption_context, resolver_options,
                         also_in_play=_schemes(header))
        return header.with_slots(slots).pack() + bytes(view[size:])
    body = view[size:]
    try:
        length = plaintext_size(len(body))
    except ValueError:
        raise IntegrityError() from None
    plaintext = open_whole_body(opened.cipher, body, length)
    return seal_object(plaintext, uris, header.encryption_context, {**resolver_options, CACHE_OPTION: False},
                       also_in_play=_schemes(header))
