"""Opening a stored object for reading: its head -> the chunk cipher, once per header seen.

Opening an object costs a header parse, the trust check of its key slots,
the key commitment and, on a DEK-cache miss, an unwrap by the key resolver
(with the local vault: a key record read and an audit line).  What it gives
(an :class:`Opened`) depends only on the stored header and body prefix, the
keys this read trusts, the encryption context it expects and the resolver
options, so it is kept in the read side of the DEK cache
(:meth:`~envcrypt.keys.cache.DekCache.take_opened`) under exactly those: a
reopened object costs no parse and no resolver call.  The entry obeys the DEK
cache's bounds (age, uses, entries, bytes), is dropped with the key's DEKs when
the key's state changes in this process (``forget_key``), is bound to the
resolver instance that opened it, and is never used by a read that trusts a
different set of keys.  ``dek_cache=False`` in the resolver options, or
``ENVCRYPT_DEK_CACHE=0``, turns it off with the DEK cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..chunked import ChunkCipher
from ..envelope import check_context
from ..format import BODY_PREFIX_SIZE, parse_header
from ..keys.base import get_resolver, split_key_uri
from ..keys.cache import (
    CACHE_OPTION,
    choose_read_cache,
    decryption_key,
    options_key,
    resolver_options_only,
    resolver_token,
)
from ..slots import open_slots
from ._heads import Head

__all__ = ["Opened", "open_head"]

#: bytes an opened entry is charged beside its key (the cipher and its derived key)
_OPENED_BYTES = 256


@dataclass(frozen=True, eq=False)
class Opened:
    """What reading an object needs once its key work is done (holds a derived key)."""

    head: Head
    immutable_size: int
    cipher: ChunkCipher

    def __repr__(self) -> str:
        return f"<Opened header_size={self.head.header_size}>"

    def __reduce__(self) -> Any:
        raise TypeError("an opened envcrypt object holds key material and cannot be pickled")


@dataclass(frozen=True, eq=False)
class _Kept:
    scheme: str
    resolver: int  # resolver_token of the resolver that opened it
    immutable_size: int
    cipher: ChunkCipher

    def __repr__(self) -> str:
        return "<opened object>"

    def __reduce__(self) -> Any:
        raise TypeError("an opened envcrypt object holds key material and cannot be pickled")


def open_head(head: Head, trusted: Sequence[str], context: Mapping[str, str], options: Mapping[str, Any]) -> Opened:
    """Open the object whose complete, sound head is ``head`` (header and body prefix).

    Raises what opening raises (``ContextMismatchError``, ``UntrustedKeyError``,
    key errors, ``WrongKeyError``, ``MalformedHeaderError``).
    """
    data = bytes(head.data[: head.open_size])
    # the usual read passes no options and no context: their parts of the key are then empty
    plain = resolver_options_only(options) if options else {}
    cache = choose_read_cache(options.get(CACHE_OPTION))
    key = ("opened", data, tuple(trusted), tuple(sorted(context.items())) if context else (),
           options_key(plain) if plain else ())
    if cache is not None:
        kept = cache.take_opened(key)
        if isinstance(kept, _Kept) and resolver_token(get_resolver(kept.scheme, **plain)) == kept.resolver:
            return Opened(head, kept.immutable_size, kept.cipher)
    header, header_size = parse_header(data)
    check_context(header, context)
    opened = open_slots(header, data[header_size : header_size + BODY_PREFIX_SIZE], trusted, options)
    immutable = len(header.immutable)
    if cache is not None:
        scheme = split_key_uri(opened.slot.key_uri)[0]
        resolver = get_resolver(scheme, **plain)
        parent = decryption_key(resolver, opened.slot, header.immutable, plain)
        cache.put_opened(key, _Kept(scheme, resolver_token(resolver), immutable, opened.cipher), parent,
                         _OPENED_BYTES)
    return Opened(head, immutable, opened.cipher)
