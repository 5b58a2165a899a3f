"""The key resolver protocol, key URI parsing and the resolver registry.

A *key resolver* turns a key URI (``local:NAME``, ``aws-kms://alias/x``, ...)
into wrap/unwrap operations on a master key (KEK).  The object format core
only ever talks to this protocol; it never imports a concrete resolver.

Resolvers are found by URI scheme: the built-in ones are imported lazily,
third-party ones register under the ``envcrypt.resolvers`` entry-point group
(the entry point's value is a callable taking keyword options and returning a
resolver).  Options *name* things (a vault directory, a region, an endpoint);
no secret is ever passed as an option.
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from ..errors import InvalidKeyUriError, ResolverUnavailableError, UnknownKeySchemeError
from ..format import KeySlot

__all__ = [
    "WRAP_AES256_KWP",
    "WRAP_RSA_OAEP_SHA256",
    "WRAP_AES256_KW",
    "WRAP_AWS_KMS",
    "DEFAULT_KEY_URI",
    "KeyResolver",
    "split_key_uri",
    "register_resolver",
    "get_resolver",
    "resolver_for",
    "default_key_uri",
]

# Wrap algorithm ids stored in key slots (FORMAT.md, "Wrap algorithms").
WRAP_AES256_KWP = 1  # RFC 5649 AES key wrap with padding under a 256-bit KEK
WRAP_RSA_OAEP_SHA256 = 2  # RSA-OAEP, SHA-256 and MGF1-SHA-256
WRAP_AES256_KW = 3  # RFC 3394 AES key wrap under a 256-bit KEK (Azure Key Vault A256KW)
WRAP_AWS_KMS = 16  # an AWS KMS CiphertextBlob (Encrypt / GenerateDataKey)

DEFAULT_KEY_URI = "local:default"
ENTRY_POINT_GROUP = "envcrypt.resolvers"


@runtime_checkable
class KeyResolver(Protocol):
    """What the format core needs from a master key service.

    ``encryption_context`` is the object's authenticated encryption context; a
    resolver that can bind it to the wrapped key (KMS encryption context, AEAD
    associated data) should, so that a slot only unwraps for the same context.
    """

    scheme: ClassVar[str]
    #: keyword options this resolver accepts (names of things, never secrets)
    options: ClassVar[frozenset[str]]

    def wrap(self, key_uri: str, dek: bytes, encryption_context: Mapping[str, str]) -> KeySlot:
        """Wrap ``dek`` under the newest enabled version of ``key_uri``.

        The returned slot's ``key_uri`` names that exact version.
        """
        ...

    def unwrap(self, slot: KeySlot, encryption_context: Mapping[str, str]) -> bytes:
        """Recover the DEK from a slot this resolver's scheme wrote.

        Called only for slots that name a key the reader trusts
        (:mod:`envcrypt.slots`).  The error contract: ``WrongKeyError`` (the
        wrapped bytes do not open under the named key) and the key errors
        (``KeyNotFoundError``, ``KeyDisabledError``, ``KeyDeletedError``,
        ``KeyAccessDeniedError``, ``ResolverUnavailableError``) mean "not through
        this slot" and the reader tries its next trusted slot; ``VaultError`` and
        any other exception are fatal.  A resolver never returns a DEK for a key
        other than the one the slot names.
        """
        ...

    def identity(self, key_uri: str) -> str:
        """The exact identity (with version) of the key new writes under ``key_uri`` would use."""
        ...


# A resolver MAY also define ``trusts(trusted_uri, slot_uri) -> bool``: whether a reader that
# trusts ``trusted_uri`` accepts a slot naming ``slot_uri`` (for URIs that do not compare as
# strings, such as KMS aliases against key ARNs).  Without it a slot is trusted when its URI
# is the trusted URI or one of its versions (``TRUSTED/N``); see envcrypt.slots.

ResolverFactory = Callable[..., KeyResolver]

_BUILTIN: dict[str, str] = {
    "local": "envcrypt.keys.vault:LocalVaultResolver",
    "aws-kms": "envcrypt.keys.aws_kms:AwsKmsResolver",
    "azure-kv": "envcrypt.keys.azure_kv:AzureKeyVaultResolver",
}
_factories: dict[str, ResolverFactory] = {}
_instances: dict[tuple[str, tuple[tuple[str, Any], ...]], KeyResolver] = {}
_lock = threading.Lock()
#: (scheme, every option as given) -> the configured resolver: a repeat lookup skips the
#: option filtering and the lock; emptied when the registry changes, bounded (options are
#: the caller's, but a long-lived process may pass many different ones)
_by_call: dict[tuple[str, tuple[tuple[str, Any], ...]], KeyResolver] = {}
#: (schemes in play, option names) that check_options accepted, and the registry they hold for
_options_checked: set[tuple[frozenset[str], frozenset[str]]] = set()
_MEMO_SIZE = 256


#: bounds on a key URI, checked before any resolver sees it: the whole URI as a slot may hold it
#: (FORMAT.md), one ``/``-separated part (KMS alias names are at most 256 characters, a discovery
#: filter lists accounts), a scheme (RFC 3986 characters)
MAX_KEY_URI = 2048
MAX_KEY_URI_PART = 1024
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+.-")


def _check_key_uri_text(key_uri: str) -> None:
    """Refuse what no key name needs and a resolver could misread as a path or a terminator:
    control characters (NUL included), ``.``/``..`` parts, over-long URIs or parts."""
    if len(key_uri) > MAX_KEY_URI:
        raise InvalidKeyUriError(f"key URI longer than {MAX_KEY_URI} characters: {key_uri[:64]!r}...")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in key_uri):
        raise InvalidKeyUriError(f"control character in key URI: {key_uri!r}")
    scheme, _, rest = key_uri.partition(":")
    if not set(scheme.lower()) <= _SCHEME_CHARS or not scheme[:1].isalpha():
        raise InvalidKeyUriError(f"bad key URI scheme: {key_uri!r}")
    for part in rest.removeprefix("//").split("/"):
        if part in (".", ".."):
            raise InvalidKeyUriError(f"'.' or '..' in key URI: {key_uri!r}")
        if len(part) > MAX_KEY_URI_PART:
            raise InvalidKeyUriError(f"key URI part longer than {MAX_KEY_URI_PART} characters: {key_uri[:64]!r}...")


def split_key_uri(key_uri: str) -> tuple[str, str]:
    """Split ``scheme:rest`` (``aws-kms://x`` gives ``("aws-kms", "x")``).

    Every key URI passes here before a resolver is chosen, so the text checks
    (``_check_key_uri_text``) come first."""
    if type(key_uri) is not str:  # a str subclass may hash or compare its own way: not memoized
        if not isinstance(key_uri, str):
            raise TypeError(f"a key URI is a str, not {type(key_uri).__name__}")
        return _split_key_uri(key_uri)
    return _split_cached(key_uri)


def _split_key_uri(key_uri: str) -> tuple[str, str]:
    scheme, sep, rest = key_uri.partition(":")
    if not sep or not scheme or not rest:
        raise InvalidKeyUriError(f"not a key URI (expected SCHEME:NAME): {key_uri!r}")
    _check_key_uri_text(key_uri)
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest:
        raise InvalidKeyUriError(f"key URI names no key: {key_uri!r}")
    return scheme.lower(), rest


#: a read splits each trusted URI and slot URI several times; a pure function of a str, so
#: kept (bounded: slot URIs come from storage, and an LRU cannot be grown by them)
_split_cached = functools.lru_cache(maxsize=4096)(_split_key_uri)


def register_resolver(scheme: str, factory: ResolverFactory) -> None:
    """Register a resolver factory for a URI scheme (replaces an earlier one)."""
    with _lock:
        _factories[scheme.lower()] = factory
        _forget_memos()
        for cached in [k for k in _instances if k[0] == scheme.lower()]:
            del _instances[cached]


def _factory(scheme: str) -> ResolverFactory:
    if scheme in _factories:
        return _factories[scheme]
    target = _BUILTIN.get(scheme)
    if target is None:
        from importlib.metadata import entry_points  # ~15 ms, paid only for a non-builtin scheme

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name.lower() == scheme:
                factory: ResolverFactory = ep.load()
                _factories[scheme] = factory
                _forget_memos()
                return factory
        raise UnknownKeySchemeError(f"no key resolver is registered for scheme {scheme!r}")
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    _factories[scheme] = factory
    _forget_memos()
    return factory


def _forget_memos() -> None:
    """The registry changed: what was looked up or checked against it is looked up again."""
    _by_call.clear()
    _options_checked.clear()


def _accepted_options(factory: ResolverFactory) -> frozenset[str] | None:
    accepted = getattr(factory, "options", None)
    return frozenset(accepted) if accepted is not None else None


def get_resolver(scheme: str, **options: Any) -> KeyResolver:
    """The resolver for ``scheme`` configured with the options it accepts (cached).

    Options the resolver does not declare are ignored here, so one set of
    options can serve every scheme of a multi-slot object; ``check_options``
    reports options that no resolver in play accepts.
    """
    scheme = scheme.lower()
    try:
        call_key = (scheme, tuple(sorted((k, hashable_options(v)) for k, v in options.items())) if options else ())
        known = _by_call.get(call_key)
    except TypeError:  # an unhashable option value: the resolver may not take it (slow path)
        call_key, known = None, None
    if known is not None:
        return known
    with _lock:
        factory = _factory(scheme)
        accepted = _accepted_options(factory)
        mine = {k: v for k, v in options.items() if accepted is None or k in accepted}
        cache_key = (scheme, tuple(sorted((k, hashable_options(v)) for k, v in mine.items())))
        resolver = _instances.get(cache_key)
        if resolver is None:
            try:
                resolver = factory(**mine)
            except TypeError as exc:  # e.g. a required option the caller did not give
                raise ResolverUnavailableError(
                    f"the {scheme!r} key resolver cannot be set up with the options given "
                    f"({', '.join(sorted(mine)) or 'none'}): {exc}") from exc
            _instances[cache_key] = resolver
        if call_key is not None:
            if len(_by_call) >= _MEMO_SIZE:
                _by_call.clear()
            _by_call[call_key] = resolver
        return resolver


def check_options(schemes: set[str], options: Mapping[str, Any]) -> None:
    """Raise TypeError for an option that no resolver accepts (a typo, not a choice).

    ``schemes`` are the schemes in play; the built-in resolvers and those registered
    in this process count too, so one set of options can serve readers and writers
    of several schemes (a filesystem whose key policy mixes ``local:`` and
    ``aws-kms://``) without an option of one being refused for the other.  No
    resolver is built here, and no scheme an object names is looked up.
    """
    if not options:
        return
    memo = (frozenset(schemes), frozenset(options))
    if memo in _options_checked:
        return
    accepted: set[str] = set()
    with _lock:
        known = set(_BUILTIN) | set(_factories)
    for scheme in known | schemes:
        try:
            factory = _factory(scheme)
        except UnknownKeySchemeError:
            continue  # reported when (and if) a key of that scheme is used
        names = _accepted_options(factory)
        if names is None:
            return  # a resolver that takes any option
        accepted |= names
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(f"unknown key resolver option(s): {', '.join(unknown)}")
    with _lock:
        if len(_options_checked) >= _MEMO_SIZE:
            _options_checked.clear()
        _options_checked.add(memo)


def hashable_options(value: Any) -> Any:
    """Resolver options (dicts, lists, paths inside) as an equal-if-equal hashable value,
    for cache keys: the resolver cache here and the DEK cache."""
    if type(value) in _PLAIN:  # the usual option (a vault path, a region): no ABC checks
        return value
    if isinstance(value, dict):
        return tuple(sorted((k, hashable_options(v)) for k, v in value.items()))
    if isinstance(value, (list, set)):
        return tuple(hashable_options(v) for v in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


_PLAIN = frozenset({str, int, bool, float, bytes, type(None)})


def resolver_for(key_uri: str, **options: Any) -> KeyResolver:
    return get_resolver(split_key_uri(key_uri)[0], **options)


def default_key_uri() -> str:
    """The key for new writes: ``$ENVCRYPT_KEY_URI``, else ``local:default``."""
    return os.environ.get("ENVCRYPT_KEY_URI") or DEFAULT_KEY_URI


def clear_resolver_cache() -> None:
    """Forget configured resolver instances (tests, or after changing the environment), and the
    process-wide DEK cache with them: its entries are keyed by key URI and options, not by what
    the environment made them mean (``local:k`` of another ``$ENVCRYPT_VAULT``), so a DEK and
    slots cached under the old resolvers must not serve the new ones."""
    from .cache import default_cache

    with _lock:
        _instances.clear()
        _forget_memos()
    default_cache().clear()
