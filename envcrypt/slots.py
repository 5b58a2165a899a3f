"""Which key slots a reader accepts, and the one function that tries them.

The key slots of an object are not authenticated: whoever can write the
storage can replace them, or write a whole object whose only slot names a key
of their own (or wraps a DEK under a *public* key).  The key commitment only
proves that a DEK belongs to the body, not who made the body.  So a reader
opens an object only through a slot that names one of its **trusted keys**,
and :func:`open_slots` is the only place where slots are tried (decrypt,
open_reader, rewrap and the filesystem all call it).

Trusted keys are key URIs, with or without a version: ``local:acme`` trusts
every version of that key, ``local:acme/3`` only version 3.  A resolver may
define ``trusts(trusted_uri, slot_uri)`` for URIs that do not compare as
strings (AWS KMS: aliases, key ids and discovery filters against key ARNs);
otherwise a slot is trusted when its URI is the trusted URI or a version of it
(the trusted URI followed by ``/N``).

The resolver error contract (``KeyResolver.unwrap``):

* ``WrongKeyError`` (the wrapped DEK does not open under this key) and the key
  errors ``KeyNotFoundError``, ``KeyDisabledError``, ``KeyDeletedError``,
  ``KeyAccessDeniedError``, ``ResolverUnavailableError`` mean "not through this
  slot": the reason is kept and the next trusted slot is tried;
* ``VaultError`` (the key store itself is unsafe or tampered with) and anything
  that is not an envcrypt error are fatal and propagate at once.

When no slot opens, one error is raised whose message lists every slot's
reason: ``UntrustedKeyError`` when no slot names a trusted key, else the class
of the first trusted slot's reason (in slot order).  Its ``reasons`` attribute
holds ``(slot key URI, error)`` for every slot.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._secret import SecretBytes
from .chunked import ChunkCipher, open_message
from .errors import (
    EnvcryptError,
    IntegrityError,
    InvalidKeyUriError,
    KeyError_,
    MalformedHeaderError,
    UntrustedKeyError,
    VaultError,
    WrongKeyError,
)
from .format import BODY_PREFIX_SIZE, Header, KeySlot
from .keys.base import check_options, get_resolver, split_key_uri
from .keys.cache import (
    CACHE_OPTION,
    DekCache,
    choose_read_cache,
    options_key,
    read_cache_key,
    resolver_options_only,
    resolver_token,
)

__all__ = ["TrustedKeysArg", "trusted_key_list", "key_name", "admits", "trusted_key_for", "open_slots",
           "OpenedSlot"]

TrustedKeysArg = str | Sequence[str] | None

_VERSION = re.compile(r"/[0-9]+$")


def key_name(key_uri: str) -> str:
    """A key URI without its version suffix (``local:acme/3`` -> ``local:acme``)."""
    if type(key_uri) is str:
        return _key_name(key_uri)
    return _VERSION.sub("", key_uri)


def _canonical(key_uri: str) -> str:
    if type(key_uri) is str:
        return _canonical_str(key_uri)
    scheme, _ = split_key_uri(key_uri)
    return scheme + key_uri[len(scheme) :]


# Pure functions of a str, asked for every trusted key and slot of every read: kept in
# bounded LRUs (slot URIs come from storage; an LRU cannot be grown past its bound by them).
# Errors (an invalid URI) are raised each time, never kept.
@functools.lru_cache(maxsize=4096)
def _key_name(key_uri: str) -> str:
    return _VERSION.sub("", key_uri)


@functools.lru_cache(maxsize=4096)
def _canonical_str(key_uri: str) -> str:
    scheme, _ = split_key_uri(key_uri)
    return scheme + key_uri[len(scheme) :]


def trusted_key_list(trusted_keys: TrustedKeysArg, default: Sequence[str] = ()) -> tuple[str, ...]:
    """The trusted key URIs as a checked tuple; ``default`` when ``trusted_keys`` is None."""
    if type(trusted_keys) is str:  # one key, the usual call: what the general path gives for it
        return (_canonical_str(trusted_keys),)
    if trusted_keys is None:
        uris = list(default)
    elif isinstance(trusted_keys, str):
        uris = [trusted_keys]
    elif isinstance(trusted_keys, Sequence) and not isinstance(trusted_keys, (bytes, bytearray)):
        uris = list(trusted_keys)
    else:
        raise TypeError(f"trusted_keys is a str or a sequence of str, not {type(trusted_keys).__name__}")
    for uri in uris:
        if not isinstance(uri, str):
            raise TypeError("trusted_keys is a str or a sequence of str")
    if not uris:
        raise InvalidKeyUriError("trusted_keys names no key: a reader must trust at least one key")
    return tuple(dict.fromkeys(_canonical(u) for u in uris))


def admits(resolver: Any, trusted_uri: str, slot_uri: str) -> bool:
    """Whether the trusted key ``trusted_uri`` covers a slot naming ``slot_uri`` (same scheme)."""
    method = getattr(resolver, "trusts", None)
    if method is not None:
        return bool(method(trusted_uri, slot_uri))
    return slot_uri == trusted_uri or key_name(slot_uri) == trusted_uri


@dataclass
class OpenedSlot:
    """What :func:`open_slots` found: the DEK (never shown), the body's chunk cipher, and
    the slots that name trusted keys (the slot that opened the object among them)."""

    dek: bytes
    cipher: ChunkCipher
    slot: KeySlot
    trusted_slots: tuple[KeySlot, ...]

    def __repr__(self) -> str:
        return f"<OpenedSlot {self.slot.key_uri!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("an OpenedSlot holds a data key and cannot be pickled")


def open_slots(
    header: Header,
    body_prefix: bytes,
    trusted_keys: Sequence[str],
    options: Mapping[str, Any],
    *,
    also_in_play: Sequence[str] = (),
    rewriting: bool = False,
) -> OpenedSlot:
    """The DEK of the first slot that names a trusted key and passes the body's key commitment.

    Slots are tried lazily in slot order: a slot that names no trusted key is
    never handed to a resolver (no key service is called with a key id an
    object chose), and a later slot's key service is not called when an earlier
    slot opens.  A DEK enters the DEK cache only after its commitment checked.
    ``also_in_play`` names further schemes whose options may be in ``options``.
    ``rewriting``: the DEK goes into a new, lasting object (rewrap, a copy to another key), so
    a cached DEK is used only after the resolver confirms the key may still unwrap
    (``check_usable``, where the resolver has it): a key another process disabled, deleted
    or purged must not have its data revived under another key from this process's cache.
    """
    if len(body_prefix) < BODY_PREFIX_SIZE:
        raise IntegrityError()
    prefix = bytes(body_prefix[:BODY_PREFIX_SIZE])
    schemes = {split_key_uri(t)[0] for t in trusted_keys}
    plain = resolver_options_only(options)
    if plain:  # (check_options accepts no options at once)
        check_options(schemes | set(also_in_play), plain)  # a resolver is built only for a trusted slot
    reasons: list[tuple[str, EnvcryptError]] = []
    resolver_of = _resolvers_for(plain)
    trusted_slots = [slot for slot in header.key_slots if _trusted(slot, trusted_keys, resolver_of, reasons)]
    if not trusted_slots:
        raise _no_slot_opened(reasons, trusted_keys)
    # on by default for every resolver; looked up only for a slot that names a trusted key
    cache: DekCache | None = choose_read_cache(options.get(CACHE_OPTION))
    plain_key = options_key(plain) if cache is not None else ()
    immutable = header.immutable
    cache_key: Any = None
    for slot in trusted_slots:
        try:
            resolver = resolver_of(split_key_uri(slot.key_uri)[0])
            dek = None
            if cache is not None:
                cache_key = read_cache_key(resolver_token(resolver), slot, immutable, plain_key)
                dek = cache.take_decryption(cache_key)
            fresh = dek is None
            if dek is None:
                dek = SecretBytes(resolver.unwrap(slot, header.encryption_context))  # hidden from reprs
            elif rewriting and (check := getattr(resolver, "check_usable", None)) is not None:
                check(slot.key_uri, "unwrapKey")
            cipher = open_message(dek, immutable, prefix)
        except VaultError:
            raise
        except InvalidKeyUriError as exc:  # the resolver says the slot names no valid key
            reasons.append((slot.key_uri, MalformedHeaderError(f"key slot {slot.key_uri!r}: {exc}")))
            continue
        except (KeyError_, WrongKeyError) as exc:
            reasons.append((slot.key_uri, exc))
            continue
        if fresh and cache is not None:
            cache.put_decryption(cache_key, dek, slot.key_uri)
        return OpenedSlot(dek, cipher, slot, tuple(trusted_slots))
    raise _no_slot_opened(reasons, trusted_keys)


def trusted_key_for(slot_uri: str, trusted_keys: Sequence[str], options: Mapping[str, Any]) -> str | None:
    """The trusted key that covers a slot naming ``slot_uri`` (None when none does).

    Only resolvers of the trusted keys' schemes are built; one may raise a key error
    while comparing (a trusted KMS alias that could not be looked up).
    """
    return _covering(slot_uri, trusted_keys, _resolvers_for(resolver_options_only(options)))


def _resolvers_for(plain: Mapping[str, Any]) -> Callable[[str], Any]:
    """``scheme -> get_resolver(scheme, **plain)``, each scheme looked up once per call."""
    found: dict[str, Any] = {}

    def resolver_of(scheme: str) -> Any:
        resolver = found.get(scheme)
        if resolver is None:
            resolver = found[scheme] = get_resolver(scheme, **plain)
        return resolver

    return resolver_of


def _covering(slot_uri: str, trusted_keys: Sequence[str], resolver_of: Callable[[str], Any]) -> str | None:
    """:func:`trusted_key_for` with the resolvers of one call."""
    try:
        scheme = split_key_uri(slot_uri)[0]
    except (InvalidKeyUriError, TypeError):
        return None
    candidates = [t for t in trusted_keys if split_key_uri(t)[0] == scheme]
    if not candidates:
        return None
    resolver = resolver_of(scheme)
    return next((uri for uri in candidates if admits(resolver, uri, _canonical(slot_uri))), None)


def _trusted(slot: KeySlot, trusted: Sequence[str], resolver_of: Callable[[str], Any],
             reasons: list[tuple[str, EnvcryptError]]) -> str | None:
    """:func:`trusted_key_for`, keeping the reason when no trusted key covers ``slot``."""
    try:
        found = _covering(slot.key_uri, trusted, resolver_of)
    except VaultError:
        raise
    except KeyError_ as exc:  # e.g. a trusted alias that could not be resolved
        reasons.append((slot.key_uri, exc))
        return None
    if found is None:
        reasons.append((slot.key_uri, UntrustedKeyError(f"{slot.key_uri!r} is not a trusted key")))
    return found


def _no_slot_opened(reasons: list[tuple[str, EnvcryptError]], trusted_keys: Sequence[str]) -> EnvcryptError:
    """One error for every slot's reason: the class of the first reason that is not 'untrusted'."""
    listed = "; ".join(f"{uri}: {type(exc).__name__}: {exc}" for uri, exc in reasons)
    first = next((exc for _, exc in reasons if not isinstance(exc, UntrustedKeyError)), None)
    error: EnvcryptError
    if first is None:
        error = UntrustedKeyError(
            f"no key slot names a trusted key (trusted: {', '.join(trusted_keys)}; slots: {listed})")
    elif len(reasons) == 1:
        error = first
    else:
        error = type(first)(f"no key slot opened the object ({listed})")
        error.__cause__ = first
    error.reasons = reasons  # type: ignore[attr-defined]
    return error
