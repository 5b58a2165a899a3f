"""The bridge: a pyarrow ``KmsClient`` whose master keys are envcrypt key URIs.

PME asks a KMS client to wrap a key (a DEK, or a KEK in double wrapping mode)
under a master key id and to unwrap it again.  Here the master key id is an
envcrypt key URI, and the work goes to the envcrypt resolver of its scheme:
``resolver.wrap(master_key_id, key, encryption_context)`` gives a key slot
naming the exact key version, and the slot is stored as the wrapped-key string.
PME master key ids are the key URIs percent-encoded (``local%3Apii``; PME's
column-key syntax cannot hold ``:``): :func:`master_key_id` / :func:`key_uri_of`.

Wrapped-key string (what PME stores in its key material as ``wrappedDEK`` /
``wrappedKEK``): standard base64 (RFC 4648, padded) of::

    magic            4 bytes   b"EPK1"
    key_uri_length   2 bytes   big-endian, 1..2048
    key_uri          UTF-8     the exact key version that wrapped (local:NAME/V, aws-kms://arn:...)
    wrap_algorithm   2 bytes   big-endian, the envcrypt wrap algorithm id (FORMAT.md):
                               1 AES-256-KWP (RFC 5649), 2 RSA-OAEP-SHA256, 16 AWS KMS CiphertextBlob
    wrapped_length   2 bytes   big-endian, 1..8192
    wrapped          bytes     the wrapped key

and nothing after it.  **Trust**: ``unwrap_key`` hands a slot to a resolver
only when the slot's key URI is admitted by one of the configured trusted keys
(:func:`envcrypt.slots.trusted_key_for`; default: the master keys the configuration
names, any version); otherwise ``UntrustedKeyError`` and no resolver is built
or called.  The master key id PME passes along comes from the file and is not
trusted for anything.  The encryption context is the configuration's (bound
by resolvers that support one: AWS KMS ``EncryptionContext``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
import struct
import threading
import time
from typing import Any
from urllib.parse import quote, unquote

import pyarrow.parquet.encryption as pe

from ..errors import MalformedHeaderError, UntrustedKeyError
from ..format import KeySlot
from ..keys.base import get_resolver, split_key_uri
from ..slots import key_name, trusted_key_for
from ._config import PmeConfig

__all__ = ["encode_wrapped", "decode_wrapped", "EnvcryptKmsClient", "crypto_factory", "connection_config",
           "master_key_id", "key_uri_of"]

MAGIC = b"EPK1"
MAX_WRAPPED_STRING = 16 * 1024  # characters; far above 4 + 2 + 2048 + 2 + 2 + 8192 bytes in base64
_U16 = struct.Struct(">H")
MAX_CACHED_KEYS = 4096


def master_key_id(key_uri: str) -> str:
    """The PME master key id of an envcrypt key URI: the URI percent-encoded (RFC 3986) except
    ``/``, because PME's column-key list syntax (``id:col,col;id:col``) cannot hold ``:``."""
    return quote(key_uri, safe="/")


def key_uri_of(master_key_identifier: str) -> str:
    """The envcrypt key URI of a PME master key id (inverse of :func:`master_key_id`)."""
    return unquote(master_key_identifier)


def encode_wrapped(slot: KeySlot) -> str:
    uri = slot.key_uri.encode("utf-8")
    raw = b"".join((MAGIC, _U16.pack(len(uri)), uri, _U16.pack(slot.wrap_algorithm),
                    _U16.pack(len(slot.wrapped_dek)), slot.wrapped_dek))
    return base64.b64encode(raw).decode("ascii")


def decode_wrapped(text: str) -> KeySlot:
    """Parse a wrapped-key string (MalformedHeaderError for anything but the layout above)."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_WRAPPED_STRING:
        raise MalformedHeaderError("PME wrapped key: not an envcrypt wrapped key (length)")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MalformedHeaderError("PME wrapped key: not base64") from exc
    if raw[:4] != MAGIC:
        raise MalformedHeaderError("PME wrapped key: not an envcrypt wrapped key (magic)")
    pos = 4

    def take(n: int) -> bytes:
        nonlocal pos
        if n <= 0 or pos + n > len(raw):
            raise MalformedHeaderError("PME wrapped key: a length is out of bounds")
        out = raw[pos:pos + n]
        pos += n
        return out

    uri = take(_U16.unpack(take(2))[0])
    algorithm = _U16.unpack(take(2))[0]
    wrapped = take(_U16.unpack(take(2))[0])
    if pos != len(raw):
        raise MalformedHeaderError("PME wrapped key: bytes after the wrapped key")
    try:
        key_uri = uri.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedHeaderError("PME wrapped key: key URI is not UTF-8") from exc
    return KeySlot(key_uri, algorithm, wrapped)


class EnvcryptKmsClient(pe.KmsClient):  # type: ignore[misc]
    """A pyarrow KmsClient over envcrypt resolvers; holds a config, never a key."""

    def __init__(self, config: PmeConfig, *, wrap_as: dict[str, str] | None = None,
                 trusted: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self._config = config
        self._trusted = trusted if trusted is not None else config.trusted()
        self._wrap_as = dict(wrap_as or {})  # rotation: master key id -> key URI to wrap under
        # wrapped-key string -> (expiry, key): PME re-unwraps single-wrapped keys for every column
        # read; a string unwrapped once (after the trust check) is served again within the lifetime
        self._unwrapped: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<EnvcryptKmsClient trusted={list(self._trusted)!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("an EnvcryptKmsClient is built in each process from its PmeConfig; pickle the config")

    def _resolver(self, scheme: str) -> Any:
        return get_resolver(scheme, **self._config.resolver_options)

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        key_uri = key_uri_of(master_key_identifier)
        key_uri = self._wrap_as.get(key_uri, key_uri)
        resolver = self._resolver(split_key_uri(key_uri)[0])
        slot = resolver.wrap(key_uri, bytes(key_bytes), self._config.encryption_context)
        return encode_wrapped(slot)

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        now = time.monotonic()
        with self._lock:
            cached = self._unwrapped.get(wrapped_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = self._unwrap(wrapped_key, master_key_identifier)
        with self._lock:
            if len(self._unwrapped) >= MAX_CACHED_KEYS:
                self._unwrapped.clear()
            self._unwrapped[wrapped_key] = (now + self._config.cache_lifetime, key)
        return key

    def _unwrap(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        slot = decode_wrapped(wrapped_key)
        scheme = split_key_uri(slot.key_uri)[0]
        if trusted_key_for(slot.key_uri, self._trusted, self._config.resolver_options) is None:
            raise UntrustedKeyError(
                f"PME key material names {slot.key_uri} (master key id {key_uri_of(master_key_identifier)!r}), "
                f"which is not a trusted key (trusted: {', '.join(self._trusted)})")
        return bytes(self._resolver(scheme).unwrap(slot, self._config.encryption_context))


# ------------------------------------------------------------ per-process pyarrow objects

_lock = threading.Lock()
_factories: dict[tuple[int, str, str | None], pe.CryptoFactory] = {}


def crypto_factory(config: PmeConfig) -> pe.CryptoFactory:
    """This process's CryptoFactory for ``config`` (cached: PME's key caches live in it)."""
    # the default vault is part of what a key URI means: $ENVCRYPT_VAULT counts when no vault is named
    key = (os.getpid(), config.cache_key(), os.environ.get("ENVCRYPT_VAULT"))
    with _lock:
        factory = _factories.get(key)
        if factory is None:
            factory = pe.CryptoFactory(lambda _connection: EnvcryptKmsClient(config))
            _factories[key] = factory
        return factory


def clear_factories() -> None:
    """Forget this process's CryptoFactories (and so PME's cached keys)."""
    with _lock:
        _factories.clear()


def connection_config() -> pe.KmsConnectionConfig:
    return pe.KmsConnectionConfig()


def lifetime(config: PmeConfig) -> datetime.timedelta:
    return datetime.timedelta(seconds=config.cache_lifetime)


def encryption_configuration(config: PmeConfig) -> pe.EncryptionConfiguration:
    footer = config.require_footer_key()
    return pe.EncryptionConfiguration(
        footer_key=master_key_id(footer),
        column_keys={master_key_id(k): list(v) for k, v in config.column_keys.items()},
        uniform_encryption=config.uniform_encryption,
        encryption_algorithm=config.encryption_algorithm,
        plaintext_footer=config.plaintext_footer,
        double_wrapping=config.double_wrapping,
        cache_lifetime=lifetime(config),
        internal_key_material=config.internal_key_material,
        data_key_length_bits=config.data_key_length_bits,
    )


def decryption_configuration(config: PmeConfig) -> pe.DecryptionConfiguration:
    return pe.DecryptionConfiguration(cache_lifetime=lifetime(config))


def names_key(trusted: str, master_key_id: str) -> bool:
    """Whether ``master_key_id`` is ``trusted`` or a version of it (plain URI comparison)."""
    return key_name(master_key_id) == key_name(trusted)
