"""The DEK cache: fewer key-service calls for many small objects.

Reusing one DEK for many objects is safe with the C2SP body: every message
derives its own AEAD key from a fresh 24-byte salt.  Two caches share one
policy:

* **encryption**: ``(key URIs, encryption context, resolver options)`` -> the DEK
  and its key slots.  An entry serves at most ``max_objects`` objects and
  ``max_bytes`` plaintext bytes (sizes that are unknown up front, as in streaming
  writes, are charged as 0 bytes) and lives at most ``max_age`` seconds.
* **decryption** (the read side): ``(resolver, slot bytes, immutable header, resolver
  options)`` -> the DEK, used at most ``max_objects`` times within ``max_age``
  seconds; the table holds at most ``max_read_bytes`` bytes of slots and headers
  (its keys) besides ``max_entries`` entries.  A hit is looked up only for a slot
  that already names a key the read trusts (``envcrypt.slots.open_slots`` checks
  trust first): a cached DEK never opens an object through an untrusted slot.

Both hold at most ``max_entries`` entries (least recently used out first) and
are thread-safe.  Defaults: 60 s, 10,000 objects, 64 GiB per DEK.

A key state change made in this process (disable, delete, purge, expiry,
operations) drops the key's entries everywhere (:func:`forget_key`, called by
the vault): the next read or write asks the resolver again, which refuses.
Before a cached DEK serves another *write*, a resolver that can check cheaply
(``check_usable``: the local vault, whose files another process may have
changed) is asked again.  A cached DEK serving a *read* is not re-checked (that
check would cost what the cache saves): a change made by another process is
seen by this process's readers within ``max_age`` seconds, the usual trade of
DEK caching (AWS Encryption SDK, Tink) and the reason for a short default age.

Defaults: **reads** use the cache for every resolver (``local:`` included);
**writes** only when every resolver of an object says ``cache_by_default`` (on for
``aws-kms``, off for ``local``).  The resolver option ``dek_cache`` (False, True or
a :class:`DekCache`) overrides both per call, and the one process-wide switch
``ENVCRYPT_DEK_CACHE=0`` turns both defaults off.
"""

from __future__ import annotations

import hmac
import itertools
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..format import KeySlot

__all__ = ["DekCache", "StreamCharge", "default_cache", "forget_key", "CACHE_OPTION", "resolver_options_only",
           "options_key", "choose_read_cache", "resolver_token", "decryption_key", "read_cache_key"]

CACHE_OPTION = "dek_cache"
#: seconds a cached DEK serves new objects or opens (short: a key disabled, deleted or purged
#: by another process is noticed by a resolver without ``check_usable`` within this time)
DEFAULT_MAX_AGE = 60.0
#: bytes of slots and headers (the keys of the read-side table) held at most
DEFAULT_MAX_READ_BYTES = 16 * 1024**2
ENV_SWITCH = "ENVCRYPT_DEK_CACHE"


@dataclass
class _Entry:
    dek: bytes = field(repr=False)
    slots: tuple[KeySlot, ...]
    created: float
    objects: int = 0
    nbytes: int = 0
    #: the key URIs the entry's DEK is wrapped under (what :func:`forget_key` matches)
    key_uris: tuple[str, ...] = ()
    #: bytes the entry holds (its key's bytes fields and the DEK): the read-side byte bound
    held: int = 0
    #: an opened object (a reader's chunk cipher and what it needs), in place of a DEK
    opened: Any = field(default=None, repr=False)
    #: for an opened object: the key of the DEK entry it was derived from (its age and uses)
    parent: Hashable | None = None


def resolver_options_only(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options without the DEK cache setting (which is the envelope's, not a resolver's)."""
    return {k: v for k, v in options.items() if k != CACHE_OPTION}


def options_key(options: Mapping[str, Any]) -> tuple[Any, ...]:
    """Resolver options as a hashable part of a cache key (same options, same key)."""
    if not options:  # the usual call: no import, no sort
        return ()
    from .base import hashable_options

    return tuple(sorted((k, hashable_options(v)) for k, v in options.items()))


#: every live DekCache, so that a key state change reaches all of them (forget_key)
_caches: weakref.WeakSet[DekCache] = weakref.WeakSet()
_caches_lock = threading.Lock()


def names_key(key: str, uri: str) -> bool:
    """Whether ``uri`` names the key ``key``: the same URI, or one of its versions (``key/N``)."""
    return uri == key or uri.startswith(key.rstrip("/") + "/")


def forget_key(key_uri: str) -> int:
    """Drop every cached DEK (encryption and decryption, in every cache of this process)
    that is wrapped under ``key_uri`` or any of its versions; the number dropped.

    A resolver calls it when a key's state changes (disable, delete, purge, expiry,
    operations), so that no write in this process is served a DEK under a key the
    resolver would now refuse.
    """
    with _caches_lock:
        caches = list(_caches)
    return sum(cache.forget(key_uri) for cache in caches)


def _audit_hit(key_uris: tuple[str, ...]) -> None:
    """Count a hit in the audit log of the vault that owns the key (a periodic ``cache-hits``
    summary line; URIs of other resolvers are ignored there)."""
    global _record_cache_hits
    if _record_cache_hits is None:  # imported on the first hit, not per hit (an import statement costs ~1 us)
        from .audit_commit import record_cache_hits

        _record_cache_hits = record_cache_hits
    for uri in key_uris:
        _record_cache_hits(uri)


_record_cache_hits: Callable[[str], None] | None = None


class DekCache:
    """A bounded, thread-safe cache of data keys (never pickled, never shown)."""

    def __init__(
        self,
        max_age: float = DEFAULT_MAX_AGE,
        max_objects: int = 10_000,
        max_bytes: int = 64 * 1024**3,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    ) -> None:
        if max_age <= 0 or max_objects < 1 or max_bytes < 0 or max_entries < 1 or max_read_bytes < 1:
            raise ValueError("DEK cache limits must be positive")
        self.max_age, self.max_objects, self.max_bytes = max_age, max_objects, max_bytes
        self.max_entries, self.max_read_bytes = max_entries, max_read_bytes
        self._read_held = 0  # bytes held by the decryption table
        self._clock = clock
        self._lock = threading.Lock()
        self._encrypt: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._decrypt: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.hits = self.misses = 0
        with _caches_lock:
            _caches.add(self)

    def __repr__(self) -> str:
        return (f"DekCache(max_age={self.max_age}, max_objects={self.max_objects}, "
                f"max_bytes={self.max_bytes}, entries={len(self._encrypt) + len(self._decrypt)})")

    def __reduce__(self) -> Any:
        raise TypeError("a DekCache holds data keys and cannot be pickled")

    def _live(self, table: OrderedDict[Hashable, _Entry], key: Hashable, nbytes: int | None) -> _Entry | None:
        entry = table.get(key)
        if entry is None:
            return None
        over = entry.nbytes >= self.max_bytes if nbytes is None else entry.nbytes + nbytes > self.max_bytes
        if self._clock() - entry.created >= self.max_age or entry.objects >= self.max_objects or over:
            self._drop(table, key)
            return None
        table.move_to_end(key)
        return entry

    def _drop(self, table: OrderedDict[Hashable, _Entry], key: Hashable) -> None:
        entry = table.pop(key)
        if table is self._decrypt:
            self._read_held -= entry.held

    def _insert(self, table: OrderedDict[Hashable, _Entry], key: Hashable, entry: _Entry) -> None:
        if key in table:
            self._drop(table, key)
        table[key] = entry
        if table is self._decrypt:
            self._read_held += entry.held
        while len(table) > self.max_entries or (table is self._decrypt and self._read_held > self.max_read_bytes):
            self._drop(table, next(iter(table)))

    # ------------------------------------------------------------ encryption

    def take_encryption(self, key: Hashable, plaintext_size: int | None) -> tuple[bytes, tuple[KeySlot, ...]] | None:
        """A cached DEK and slots for one more object, charged to the entry; None on a miss.

        ``plaintext_size`` None (a streaming write) is served only while the entry is
        under its byte budget; the writer charges its size later (:meth:`charge_encryption`).
        """
        with self._lock:
            entry = self._live(self._encrypt, key, plaintext_size)
            if entry is None:
                self.misses += 1
                return None
            entry.objects += 1
            entry.nbytes += plaintext_size or 0
            self.hits += 1
        _audit_hit(entry.key_uris)
        return entry.dek, entry.slots

    def put_encryption(self, key: Hashable, dek: bytes, slots: tuple[KeySlot, ...], plaintext_size: int | None) -> None:
        """Remember a fresh DEK that has already been used for one object."""
        nbytes = plaintext_size or 0
        if nbytes > self.max_bytes:
            return
        uris = tuple(slot.key_uri for slot in slots)
        with self._lock:
            self._insert(self._encrypt, key, _Entry(dek, slots, self._clock(), 1, nbytes, uris))

    def charge_encryption(self, key: Hashable, dek: bytes, nbytes: int) -> None:
        """Charge ``nbytes`` sealed under ``dek`` to its entry (if still cached); an entry
        over its byte budget is retired."""
        with self._lock:
            entry = self._encrypt.get(key)
            if entry is None or not hmac.compare_digest(entry.dek, dek):
                return  # already retired (and maybe replaced by a fresh DEK)
            entry.nbytes += nbytes
            if entry.nbytes >= self.max_bytes:
                self._drop(self._encrypt, key)

    # ------------------------------------------------------------ decryption

    def take_decryption(self, key: Hashable) -> bytes | None:
        with self._lock:
            entry = self._live(self._decrypt, key, 0)
            if entry is None or entry.opened is not None:
                self.misses += 1
                return None
            entry.objects += 1
            self.hits += 1
        _audit_hit(entry.key_uris)
        return entry.dek

    def put_decryption(self, key: Hashable, dek: bytes, key_uri: str = "") -> None:
        """Remember a DEK a resolver unwrapped (after its key commitment checked); an entry
        larger than the whole byte bound is not kept."""
        held = len(dek) + _bytes_in(key)
        if held > self.max_read_bytes:
            return
        with self._lock:
            self._insert(self._decrypt, key, _Entry(dek, (), self._clock(), 1, 0, (key_uri,), held))

    def take_opened(self, key: Hashable) -> Any:
        """An opened object :meth:`put_opened` kept (None on a miss).  It lives only as long as
        the DEK entry it was derived from, and each use is charged to that entry: the bounds
        (age since the unwrap, uses) and :func:`forget_key` of a cached DEK apply unchanged."""
        with self._lock:
            entry = self._live(self._decrypt, key, 0)
            parent = self._live(self._decrypt, entry.parent, 0) if entry is not None and entry.parent else None
            if entry is None or entry.opened is None or parent is None or parent.opened is not None:
                if entry is not None:
                    self._drop(self._decrypt, key)
                self.misses += 1
                return None
            parent.objects += 1
            self.hits += 1
            uris, opened = parent.key_uris, entry.opened
        _audit_hit(uris)  # an opened object served is a use of its cached DEK: counted as one
        return opened

    def put_opened(self, key: Hashable, opened: Any, parent: Hashable, held: int = 0) -> None:
        """Remember what opening an object gave (a reader's chunk cipher), derived from the DEK
        cached under ``parent`` (:func:`decryption_key`); ``held`` is what it holds beside its key."""
        held += _bytes_in(key)
        if held > self.max_read_bytes:
            return
        with self._lock:
            dek = self._decrypt.get(parent)
            if dek is None or dek.opened is not None:
                return  # the DEK was not kept (or is gone already): nothing to derive from
            self._insert(self._decrypt, key,
                         _Entry(b"", (), dek.created, 0, 0, dek.key_uris, held, opened, parent))

    def forget(self, key_uri: str) -> int:
        """Drop the entries whose DEK is wrapped under ``key_uri`` (or a version of it)."""
        dropped = 0
        with self._lock:
            for table in (self._encrypt, self._decrypt):
                for k in [k for k, e in table.items() if any(names_key(key_uri, u) for u in e.key_uris)]:
                    self._drop(table, k)
                    dropped += 1
        return dropped

    def clear(self) -> None:
        with self._lock:
            self._encrypt.clear()
            self._decrypt.clear()
            self._read_held = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._encrypt) + len(self._decrypt)


def decryption_key(resolver: Any, slot: KeySlot, immutable: bytes, options: Mapping[str, Any]) -> Hashable:
    """The read-side cache key of the DEK in ``slot``: the resolver instance, the slot's bytes,
    the object's immutable header and the resolver options."""
    return read_cache_key(resolver_token(resolver), slot, immutable, options_key(options))


def read_cache_key(token: int, slot: KeySlot, immutable: bytes, options_key_: tuple[Any, ...]) -> Hashable:
    """:func:`decryption_key` from a :func:`resolver_token` and an :func:`options_key` a caller
    computed once (a read trying several slots)."""
    return (token, slot.key_uri, slot.wrap_algorithm, slot.wrapped_dek, immutable, options_key_)


def _bytes_in(key: Hashable) -> int:
    """The bytes a cache key holds in its bytes and str fields (nested tuples included)."""
    if isinstance(key, (bytes, bytearray, str)):
        return len(key)
    if isinstance(key, tuple):
        return sum(_bytes_in(part) for part in key)
    return 8


#: resolver instance -> a number never given to another instance (an id() can be reused)
_resolver_tokens: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_unweakable: dict[int, tuple[Any, int]] = {}
_token_counter = itertools.count(1)


def resolver_token(resolver: Any) -> int:
    """A number naming one resolver instance for as long as it lives: part of a read-side key,
    so a DEK one resolver unwrapped (one vault) never serves a read through another."""
    try:
        token = _resolver_tokens.get(resolver)  # a resolver seen before: a read needs no lock
    except TypeError:
        token = None  # not weakly referenceable: below
    if token is not None:
        return token
    with _caches_lock:
        try:
            token = _resolver_tokens.get(resolver)
            if token is None:
                token = _resolver_tokens[resolver] = next(_token_counter)
            return token
        except TypeError:  # not weakly referenceable: keep it alive so that its id stays its own
            held = _unweakable.get(id(resolver))
            if held is None or held[0] is not resolver:
                held = _unweakable[id(resolver)] = (resolver, next(_token_counter))
            return held[1]


class StreamCharge:
    """Charges the bytes a streaming write sealed to the cache entry whose DEK it used
    (holds the DEK: never shown, never pickled)."""

    __slots__ = ("_cache", "_key", "_dek")

    def __init__(self, cache: DekCache, key: Hashable, dek: bytes) -> None:
        self._cache, self._key, self._dek = cache, key, dek

    def __call__(self, nbytes: int) -> None:
        self._cache.charge_encryption(self._key, self._dek, nbytes)

    def __repr__(self) -> str:
        return "<StreamCharge>"

    def __reduce__(self) -> Any:
        raise TypeError("a StreamCharge holds a data key and cannot be pickled")


_default = DekCache()


def default_cache() -> DekCache:
    """The process-wide cache used when ``dek_cache`` is not given a cache of its own."""
    return _default


def _switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, "").lower() in ("0", "off", "false", "no")


def choose_read_cache(setting: Any) -> DekCache | None:
    """The cache a read uses: from the ``dek_cache`` option, else on (for every resolver)
    unless ``ENVCRYPT_DEK_CACHE=0``."""
    if setting is None:
        return None if _switched_off() else _default
    return choose_cache(setting, [])


def choose_cache(setting: Any, resolvers: list[Any]) -> DekCache | None:
    """The cache a write uses: from the ``dek_cache`` option, else the resolvers' default."""
    if isinstance(setting, DekCache):
        return setting
    if setting is None:
        if _switched_off():
            return None
        setting = bool(resolvers) and all(getattr(r, "cache_by_default", False) for r in resolvers)
    if setting is True:
        return _default
    if setting is False:
        return None
    raise TypeError("dek_cache is True, False, None or a DekCache")
