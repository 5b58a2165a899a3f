"""envcrypt: transparent envelope encryption of stored data.

Every object gets its own random data key (DEK); the body is sealed with the
C2SP chunked-encryption construction (Cobblestone-256: HKDF-SHA-512 and
AES-256-GCM over 16 KiB chunks), and the DEK is wrapped by one or more master
keys found through key resolvers (``local:NAME``, ``aws-kms://KEY``, ...).
See FORMAT.md for the byte layout.
"""

from __future__ import annotations

from . import errors
from .envelope import ObjectInfo, decrypt, encrypt, inspect
from .errors import (
    ContextMismatchError,
    EnvcryptError,
    IntegrityError,
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    MalformedHeaderError,
    NotEncryptedError,
    ResolverUnavailableError,
    UnsupportedVersionError,
    UntrustedKeyError,
    WrongKeyError,
)
from .format import CHUNK_SIZE, Header, KeySlot
from .keys.base import KeyResolver, register_resolver
from .rewrap import rewrap
from .streams import DecryptingReader, EncryptingWriter, open_reader, open_writer

__version__ = "0.1.0"

__all__ = [
    "encrypt",
    "decrypt",
    "open_writer",
    "open_reader",
    "inspect",
    "ObjectInfo",
    "EncryptingWriter",
    "DecryptingReader",
    "Header",
    "KeySlot",
    "KeyResolver",
    "register_resolver",
    "CHUNK_SIZE",
    "errors",
    "EnvcryptError",
    "IntegrityError",
    "WrongKeyError",
    "UntrustedKeyError",
    "NotEncryptedError",
    "UnsupportedVersionError",
    "MalformedHeaderError",
    "ContextMismatchError",
    "KeyNotFoundError",
    "KeyDisabledError",
    "KeyDeletedError",
    "KeyAccessDeniedError",
    "ResolverUnavailableError",
    "rewrap",
]
