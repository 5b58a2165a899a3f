"""The envcrypt exception tree.

Every error envcrypt raises on purpose is an ``EnvcryptError``.  Authentication
failures are deliberately opaque: an ``IntegrityError`` never says which chunk,
byte or field failed, so that an attacker learns nothing from the message.
No exception ever carries key material.
"""

from __future__ import annotations

__all__ = [
    "EnvcryptError",
    "IntegrityError",
    "WrongKeyError",
    "UntrustedKeyError",
    "NotEncryptedError",
    "UnsupportedVersionError",
    "MalformedHeaderError",
    "ContextMismatchError",
    "KeyError_",
    "KeyNotFoundError",
    "KeyDisabledError",
    "KeyDeletedError",
    "KeyAccessDeniedError",
    "ResolverUnavailableError",
    "UnknownKeySchemeError",
    "ClosedError",
    "VaultError",
    "InvalidSignatureError",
    "KeyStateError",
    "AuditLogError",
    "UnpublishedWriteWarning",
    "InvalidKeyUriError",
    "KeyUsageError",
    "UnsafePathError",
    "StorageOptionsError",
    "MissingDependencyError",
    "IsAPrefixError",
    "VaultNotFoundError",
    "UnsupportedTypeError",
    "InternalError",
    "ObjectExistsError",
    "ObjectChangedError",
]


class EnvcryptError(Exception):
    """Root of every error envcrypt raises on purpose."""


class IntegrityError(EnvcryptError):
    """The object was tampered with, truncated, reordered or extended.

    One opaque message for every authentication failure of the body.
    """

    def __init__(self, message: str = "ciphertext failed authentication") -> None:
        super().__init__(message)


class WrongKeyError(EnvcryptError):
    """The data key does not match the object's key commitment.

    Raised before any chunk is decrypted: the object was sealed under another
    key (or another header), which is told apart from tampering with the body.
    """


class UntrustedKeyError(WrongKeyError):
    """None of the object's key slots names a key the reader trusts.

    The key slots are not authenticated (anyone who can write the storage can
    write an object whose slot names a key of their own, or wraps a DEK under a
    public key), so a reader opens an object only through a slot naming one of
    its trusted keys.  A WrongKeyError too: the object was not written for this
    reader.
    """


class NotEncryptedError(EnvcryptError):
    """The input does not start with the envcrypt magic: it is not an envcrypt object."""


class UnsupportedVersionError(EnvcryptError):
    """The object has the envcrypt magic but a format version or suite this release cannot read."""


class MalformedHeaderError(EnvcryptError):
    """The envcrypt header is structurally invalid (bad lengths, absurd sizes, bad encoding)."""


class ContextMismatchError(EnvcryptError):
    """The caller's expected encryption context does not match the object's."""


class KeyError_(EnvcryptError):
    """Base class of the errors about master keys and key resolvers."""


class KeyNotFoundError(KeyError_):
    """No master key by that name (or version) exists."""


class KeyDisabledError(KeyError_):
    """The master key exists but is disabled, not yet valid or expired."""


class KeyDeletedError(KeyError_):
    """The master key was deleted (soft-deleted, pending deletion or purged)."""


class KeyAccessDeniedError(KeyError_):
    """The caller may not use this master key for this operation."""


class ResolverUnavailableError(KeyError_):
    """The key service could not be reached or kept throttling after retries,
    or the resolver's optional dependency is not installed."""


class UnknownKeySchemeError(KeyError_):
    """No key resolver is registered for the key URI's scheme."""


class ClosedError(EnvcryptError, ValueError):
    """An operation on a closed, aborted or failed reader or writer."""


class VaultError(KeyError_):
    """The local vault is unsafe or unusable: insecure permissions, a symlink, corrupt
    files, a missing or wrong passphrase, or KDF parameters above the allowed cap."""


class InvalidSignatureError(EnvcryptError):
    """A signature does not verify under the named key."""


class KeyStateError(KeyError_, ValueError):
    """A key management request that the key's current state forbids
    (create over an existing key, recover a key that is not deleted, ...)."""


class AuditLogError(EnvcryptError):
    """The vault audit log was edited, reordered or truncated (its hash chain is broken)."""


class UnpublishedWriteWarning(RuntimeWarning):
    """A writer was closed while an exception raised after it was opened propagated,
    so it sealed and published nothing.  Harmless when the write really failed; a
    sign of lost output when ``close()`` was called on purpose from an ``except`` block."""


class InvalidKeyUriError(KeyError_, ValueError):
    """A malformed key URI or key name (no scheme, a bad ``local:`` name or version), or
    a key URI list that is empty or longer than the slot cap.  A ValueError too."""


class KeyUsageError(KeyError_, ValueError):
    """A request the key cannot serve as asked: a key length the wrap algorithm refuses,
    a message too long for RSA-OAEP, the public key of a symmetric key, an unknown key
    kind or operation, imported material of the wrong type.  A ValueError too."""


class UnsafePathError(EnvcryptError, ValueError):
    """A path whose key the key policy cannot decide safely: a ``.``, ``..`` or empty segment
    (``tenants/b/../a/x``, ``tenants//a``) names one prefix as text and another on the
    storage, so it is refused wherever a key policy applies.  A ValueError too."""


class StorageOptionsError(EnvcryptError, ValueError):
    """Storage options that cannot be meant as given: options are keyed by protocol
    (``{"s3": {"endpoint_url": ...}}``), and a top-level key that names no protocol would be
    silently dropped by fsspec.  A ValueError too."""


class MissingDependencyError(EnvcryptError, ImportError):
    """An optional dependency is not installed; the message says which extra to install
    (``pip install 'envcrypt[aws]'``).  An ImportError too."""


class IsAPrefixError(EnvcryptError, IsADirectoryError):
    """A command on one object was given a prefix (a directory); repeat it with ``-r``.
    An IsADirectoryError too."""


class VaultNotFoundError(KeyNotFoundError):
    """No local vault in the directory named (``--vault``, ``$ENVCRYPT_VAULT`` or the default).
    A read never creates a vault: a mistyped path would otherwise become a new, empty one."""


class UnsupportedTypeError(EnvcryptError, TypeError):
    """A column type that ``envcrypt.columns`` cannot encrypt cell by cell (nested types: list,
    struct, map, union; extension and run-end encoded types), or a mode that would be useless
    for it (deterministic encryption of a boolean column).  A TypeError too."""


class InternalError(EnvcryptError, RuntimeError):
    """An internal invariant does not hold: a bug in envcrypt, never a property of the input.

    Raised where an ``assert`` would vanish under ``python -O``; nothing is returned
    past it (no plaintext, no partial object).  The message names the invariant and
    never carries data or key material.  The CLI reports it as a bug (exit 1).
    """

    def __init__(self, invariant: str) -> None:
        super().__init__(f"internal error (a bug in envcrypt): {invariant}")


class ObjectExistsError(EnvcryptError, FileExistsError):
    """An exclusive create (``fs.open(path, "xb")`` or ``overwrite=False``) found an object at
    the path: another writer created it first, and it was left as that writer made it.
    A FileExistsError too (the fsspec convention)."""


class ObjectChangedError(EnvcryptError):
    """The stored object was replaced while it was being read: the reader is pinned to the
    version (ETag) it opened and refuses to continue on another object's bytes.  Nothing is
    wrong with either object; open the path again to read the new one."""
