"""The embedded local key vault behind ``local:`` key URIs.

Semantics follow the cloud key vaults:

* keys have a kind (``aes256`` for wrapping, ``rsa`` (3072-bit) and ``ec-p256`` for
  sign/verify; an ``rsa`` key created with ``ops=["wrapKey", "unwrapKey", "encrypt",
  "decrypt"]`` does RSA-OAEP instead: one rsa key never both signs and decrypts, so a
  signing key's public key cannot forge a key slot the vault opens), **versions** (rotate = new version; new
  writes use the newest enabled one, older versions still unwrap), per-key
  **permitted operations** (wrapKey, unwrapKey, encrypt, decrypt, sign, verify),
  enable/disable (per key or per version), ``not_before`` and ``expires``;
* **soft delete** (the key refuses every use with ``KeyDeletedError`` but can be
  recovered), **purge** (the material is destroyed: crypto-shredding; a tombstone
  keeps the name so later reads still say ``KeyDeletedError``, and version numbers of
  a re-created key continue after the purged ones);
* import of raw material and **BYOK** packages (see byok.py), encrypted
  **backup/restore** of one key, a small **secrets** store (vault_secrets.py);
* every operation, allowed or refused, is written to the hash-chained **audit log**.

Records live in ``keys/NAME.json``; each must name its own file and carries a
``mac`` (HMAC-SHA256 under a key derived from the vault master key, over the whole
record: state, version list, sealed material and ``generation``), so a record
edited, or copied over another key's file, is refused with VaultError; a record
whose generation is older than the vault index's entry (an old copy put back to
undo a disable, delete or purge) is refused with VaultError too (vault_store.py).
Every state change drops the process's cached DEKs under the key (cache.forget_key).
A record is parsed once into a frozen :class:`~.vault_records.KeyRecord` and kept between
operations while its file and the index are unchanged (vault_index.RecordCache: two
``lstat`` per use; a change by any process is seen on the next operation).  The kinds'
operations come from one table (vault_crypto.OPS); every operation runs in one audited
scope (audit.AuditScope: parse, use, audit, the failure too).

State rules: ``not_before`` in the future refuses every use; after ``expires`` a
key still unwraps, decrypts and verifies (old data stays readable) but refuses
wrapKey, encrypt and sign (no new data under it).

Key URIs: ``local:NAME`` (newest enabled version) or ``local:NAME/VERSION``; the
management methods also take a bare ``NAME``.  Key slots name the exact version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..errors import (
    EnvcryptError,
    InvalidKeyUriError,
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyStateError,
    KeyUsageError,
    VaultError,
    WrongKeyError,
)
from ..format import KeySlot
from . import vault_crypto as vc
from .audit import AuditLog, AuditScope
from .base import split_key_uri
from .byok import pack_backup, unpack_backup, unwrap_transfer
from .cache import forget_key
from .vault_records import KeyRecord, KeyVersion, check_kind, check_name, new_record, restorable
from .vault_secrets import SecretStore
from .vault_store import Argon2Params, VaultStore, b64e, default_vault_path

__all__ = [
    "LocalVault", "LocalVaultResolver", "VaultError", "default_vault_path", "parse_local_uri",
    "sign", "sign_versioned", "verify", "public_key_pem", "vault_for",
]

KEYS_DIR = "keys"
AUTO_CREATED_KEY = "default"
DEFAULT_RETENTION_DAYS = 7
_LOADED_CACHE_SIZE = 256
#: operations refused once a key has expired (no new data under it)
_PRODUCING_OPS = frozenset({"wrapKey", "encrypt", "sign"})
T = TypeVar("T")


def parse_local_uri(key_uri: str) -> tuple[str, int | None]:
    """``local:NAME[/VERSION]`` -> ``(NAME, VERSION or None)``."""
    scheme, rest = split_key_uri(key_uri)
    if scheme != "local":
        raise InvalidKeyUriError(f"not a local: key URI: {key_uri!r}")
    return _parse_ref(rest)


def _parse_ref(ref: str) -> tuple[str, int | None]:
    if type(ref) is str:  # a str subclass may hash or compare its own way: not memoized
        return _parse_ref_cached(ref)
    return _parse_ref_text(ref)


def _parse_ref_text(ref: str) -> tuple[str, int | None]:
    if not isinstance(ref, str):
        raise TypeError(f"a key name or URI is a str, not {type(ref).__name__}")
    if ref.startswith("local:"):
        return parse_local_uri(ref)
    name, sep, version = ref.partition("/")
    check_name(name)
    if not sep:
        return name, None
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise InvalidKeyUriError(f"invalid local key version: {version!r}")
    return name, int(version)


#: every operation parses its reference (twice for a wrap or an unwrap): a pure function of a
#: str, kept in a bounded LRU (slot URIs come from storage; they cannot grow it past its bound);
#: an invalid reference raises each time, never kept
_parse_ref_cached = functools.lru_cache(maxsize=4096)(_parse_ref_text)


def _now() -> int:
    return int(time.time())


def _parse_stored(record: dict[str, Any]) -> KeyRecord:
    """A stored key record (the store checked that it names its file) as a KeyRecord."""
    return KeyRecord.parse(record, str(record.get("name")))


class LocalVault:
    """A directory-backed key vault.  Holds the vault master key: never pickled, never shown.

    ``passphrase`` opens a passphrase-protected vault (else ``$ENVCRYPT_VAULT_PASSPHRASE``).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, passphrase: bytes | str | None = None) -> None:
        self.store = VaultStore(path, passphrase)
        self.audit = AuditLog(self.store)
        self._loaded: OrderedDict[tuple[str, int, str], Any] = OrderedDict()
        self._loaded_lock = threading.Lock()
        self.secrets = SecretStore(self.store, self.audit)

    @property
    def path(self) -> Path:
        return self.store.path

    def __repr__(self) -> str:
        return f"LocalVault({str(self.path)!r})"

    def __reduce__(self) -> Any:
        return (type(self), (str(self.path),))

    def init(self, passphrase: bytes | str | None = None, *, memory_cost: int = 64 * 1024,
             iterations: int = 3, lanes: int = 4) -> None:
        """Initialise a new vault, with a passphrase-sealed master key when ``passphrase`` is given."""
        self.store.init(passphrase, Argon2Params(memory_cost, iterations, lanes) if passphrase else None)

    # ------------------------------------------------------------ records

    def _load(self, name: str) -> KeyRecord:
        """The record of ``name``: authenticated (MAC), of the generation the index holds,
        parsed once (kept while its files are unchanged: vault_index.RecordCache)."""
        check_name(name)
        return self._load_valid(name)

    def _load_valid(self, name: str) -> KeyRecord:
        """:meth:`_load` of a name already checked (it came from :func:`_parse_ref`)."""
        try:
            return self.store.load_record(KEYS_DIR, name, _parse_stored)
        except FileNotFoundError:
            raise KeyNotFoundError(f"no key local:{name} in the vault at {self.path}") from None

    def _store(self, record: KeyRecord) -> int:
        """Write a record at the next generation (the caller holds the vault lock); the generation."""
        return self.store.write_record(KEYS_DIR, record.name, record.to_json())

    def _audited(self, op: str, ref: Any, version: int | None = None) -> AuditScope:
        """Parse ``ref``, run the block, audit it (the failure too): one boundary for every operation."""
        return self.audit.scope(op, ref, parse=_parse_ref, version=version)

    def _update(self, op: str, ref: str, change: Callable[[KeyRecord, int | None], tuple[KeyRecord, T]]) -> T:
        """Load, change and store a record under the vault lock; audited with the new generation.
        The process's cached DEKs under the key are dropped after the change."""
        with self._audited(op, ref) as line:
            name, version = str(line.key), line.version
            with self.store.locked():
                record, result = change(self._load(name), version)
                line.extra["generation"] = self._store(record)
            forget_key(f"local:{name}")
            return result

    def _seal_label(self, name: str, version: int) -> str:
        return f"key:{name}/{version}"

    def _new_version(self, record: KeyRecord, material: bytes, origin: str) -> tuple[KeyRecord, str]:
        version = record.last_version + 1
        kind = record.kind_ops
        entry = KeyVersion(version, _now(), True, origin, self.store.seal(self._seal_label(record.name, version), material),
                           kind.public_pem(vc.load_private(kind.kind, material)))
        return record.with_version(entry), f"local:{record.name}/{version}"

    def _create(self, op: str, name: str, kind: str, material: bytes | None, origin: str,
                ops: Iterable[str] | None, not_before: int | None, expires: int | None,
                transfer: bool = False) -> str:
        check_name(name)
        check_kind(kind)
        wanted = vc.check_ops(kind, vc.DEFAULT_OPS[kind] if ops is None else list(ops), transfer=transfer)
        material = vc.generate(kind) if material is None else material  # after the checks
        with self._audited(op, name) as line, self.store.locked():
            previous = None
            with contextlib.suppress(KeyNotFoundError):
                previous = self._load(name)
            if previous is not None and not previous.purged:
                if previous.deleted:
                    raise KeyStateError(f"local:{name} is soft-deleted: recover or purge it first")
                if op == "create" or previous.kind != kind:
                    raise KeyStateError(f"key local:{name} already exists")
                record = previous  # import into an existing key adds a version
            else:
                record = new_record(name, kind, wanted, _now(), transfer=transfer, not_before=not_before,
                                    expires=expires, previous=previous)
            record, uri = self._new_version(record, material, origin)
            line.extra["generation"] = self._store(record)
            return uri

    # ------------------------------------------------------------ lifecycle

    def create_key(self, name: str, kind: str = vc.AES256, *, ops: Iterable[str] | None = None,
                   not_before: int | None = None, expires: int | None = None) -> str:
        """Create a key; return its exact URI (``local:NAME/1``, or later after a purge)."""
        return self._create("create", name, kind, None, "generated", ops, not_before, expires)

    def import_key(self, name: str, material: bytes, kind: str = vc.AES256, *,
                   ops: Iterable[str] | None = None, not_before: int | None = None,
                   expires: int | None = None) -> str:
        """Import raw material (32 bytes for aes256; a PEM/DER private key for rsa/ec-p256).

        Creates the key, or adds a new version to an existing key of the same kind.
        """
        stored = vc.normalize_import(kind, material)
        return self._create("import", name, kind, stored, "imported", ops, not_before, expires)

    def create_transfer_key(self, name: str) -> tuple[str, str]:
        """A vault RSA-3072 key for BYOK imports: ``(exact URI, public key PEM)``.

        Its only permitted operation is ``import`` (opening BYOK packages): it never unwraps DEK slots.
        """
        uri = self._create("create-transfer-key", name, vc.RSA, None, "generated", (vc.IMPORT_OP,), None, None, True)
        return uri, self.public_key_pem(uri)

    def import_byok(self, name: str, transfer_key_uri: str, package: bytes, kind: str = vc.AES256, *,
                    ops: Iterable[str] | None = None) -> str:
        """Import material wrapped with :func:`envcrypt.keys.byok.wrap_for_transfer`."""
        with self._audited("byok-unwrap", transfer_key_uri):
            record, entry = self._usable(transfer_key_uri, vc.IMPORT_OP)
            if not record.transfer:
                raise KeyAccessDeniedError(f"local:{record.name} is not a transfer key")
            material = vc.normalize_import(kind, unwrap_transfer(self._key_object(record, entry), package))
        return self._create("import-byok", name, kind, material, "byok", ops, None, None)

    def rotate_key(self, name: str) -> str:
        """Add a new version; new writes use it, older versions still unwrap."""
        def change(record: KeyRecord, version: int | None) -> tuple[KeyRecord, str]:
            record.check_live()
            return self._new_version(record, vc.generate(record.kind_ops.kind), "generated")

        return self._update("rotate", name, change)

    def set_enabled(self, ref: str, enabled: bool) -> None:
        """Enable or disable a key (``NAME``) or one version (``NAME/V``)."""
        def change(record: KeyRecord, version: int | None) -> tuple[KeyRecord, None]:
            record.check_live()
            if version is None:
                return dataclasses.replace(record, enabled=enabled), None
            return record.with_version_enabled(version, enabled), None

        self._update("enable" if enabled else "disable", ref, change)

    def disable_key(self, ref: str) -> None:
        self.set_enabled(ref, False)

    def enable_key(self, ref: str) -> None:
        self.set_enabled(ref, True)

    def set_validity(self, name: str, *, not_before: int | None = None, expires: int | None = None) -> None:
        """Set ``not_before``/``expires`` (Unix seconds; None clears)."""
        def change(record: KeyRecord, version: int | None) -> tuple[KeyRecord, None]:
            record.check_live()
            return dataclasses.replace(record, not_before=not_before, expires=expires), None

        self._update("set-validity", name, change)

    def set_ops(self, name: str, ops: Iterable[str]) -> None:
        """Replace the permitted operations of a key."""
        wanted = list(ops)

        def change(record: KeyRecord, version: int | None) -> tuple[KeyRecord, None]:
            record.check_live()
            checked = vc.check_ops(record.kind_ops.kind, wanted, transfer=record.transfer)
            return dataclasses.replace(record, ops=tuple(checked)), None

        self._update("set-ops", name, change)

    def delete_key(self, name: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> None:
        """Soft-delete: every use fails with KeyDeletedError until ``recover``; ``purge`` destroys it."""
        def change(record: KeyRecord, version: int | None) -> tuple[KeyRecord, None]:
            record.check_live()
            now = _now()
            return dataclasses.replace(record, deleted=now, scheduled_purge=now + retention_days * 86400), None

        self._update("delete", name, change)

    def recover_key(self, name: str) -> None:
        def change(record: KeyRecord, version: int | None) -> tuple[KeyRecord, None]:
            if record.purged:
                raise KeyDeletedError(f"local:{record.name} was purged and cannot be recovered")
            if not record.deleted:
                raise KeyStateError(f"local:{record.name} is not deleted")
            return dataclasses.replace(record, deleted=None, scheduled_purge=None), None

        self._update("recover", name, change)

    def purge_key(self, name: str) -> None:
        """Destroy a soft-deleted key's material (crypto-shredding); a tombstone remains."""
        def change(record: KeyRecord, version: int | None) -> tuple[KeyRecord, None]:
            if record.purged:
                raise KeyDeletedError(f"local:{record.name} was already purged")
            if not record.deleted:
                raise KeyStateError(f"local:{record.name} must be deleted before it is purged")
            with self._loaded_lock:
                self._loaded.clear()
            return record.tombstone(_now()), None

        self._update("purge", name, change)

    def purge_due(self, now: int | None = None) -> list[str]:
        """Purge every soft-deleted key whose retention period has ended; their names.

        There is no background job: call this (``envcrypt key purge-due``) from a schedule.
        """
        now = _now() if now is None else now
        due = [k["name"] for k in self.list_keys(include_deleted=True)
               if k["deleted"] and k["scheduled_purge"] is not None and k["scheduled_purge"] <= now]
        for name in due:
            self.purge_key(name)
        return due

    # ------------------------------------------------------------ inspection

    def key_exists(self, name: str) -> bool:
        try:
            record = self._load(name)
        except KeyNotFoundError:
            return False
        return not record.purged

    def list_keys(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        with self._audited("list", None):
            directory = self.store.ensure_dir(KEYS_DIR)
            records = [self._load(path.stem) for path in sorted(directory.glob("*.json"))]
            return [r.summary(versions=False) for r in records
                    if not r.purged and (include_deleted or not r.deleted)]

    def show_key(self, ref: str) -> dict[str, Any]:
        with self._audited("show", ref) as line:
            record = self._load(str(line.key))
            if record.purged:
                raise KeyDeletedError(f"local:{record.name} was purged")
            return record.summary(versions=True)

    # ------------------------------------------------------------ use

    def _usable(self, ref: str, op: str) -> tuple[KeyRecord, KeyVersion]:
        """The record and version entry for ``op`` on ``ref``, after every state check."""
        return self._usable_parsed(*_parse_ref(ref), op)

    def _usable_parsed(self, name: str, version: int | None, op: str) -> tuple[KeyRecord, KeyVersion]:
        """:meth:`_usable` of a reference :func:`_parse_ref` parsed (``name`` is valid)."""
        record = self._load_valid(name)
        record.check_live()
        if op not in record.ops:
            raise KeyAccessDeniedError(f"local:{name} does not permit {op}: {record.ops_hint(op)}")
        if not record.enabled:
            raise KeyDisabledError(f"local:{name} is disabled")
        now = _now()
        if record.not_before and now < record.not_before:
            raise KeyDisabledError(f"local:{name} is not valid yet")
        if record.expires and now >= record.expires and op in _PRODUCING_OPS:
            raise KeyDisabledError(f"local:{name} has expired (it still opens existing data)")
        if version is None:
            for newest in reversed(record.versions):  # the newest enabled version
                if newest.enabled:
                    return record, newest
            raise KeyDisabledError(f"local:{name} has no enabled version")
        entry = record.version_entry(version)
        if not entry.enabled:
            raise KeyDisabledError(f"local:{name}/{version} is disabled")
        return record, entry

    def check_usable(self, ref: str, op: str = "wrapKey") -> None:
        """Raise the key error ``op`` on ``ref`` would raise now (a read of the record, no audit line)."""
        self._usable(ref, op)

    def _key_object(self, record: KeyRecord, entry: KeyVersion) -> Any:
        cache_key = (record.name, entry.version, str(entry.material))
        with self._loaded_lock:
            if cache_key in self._loaded:
                self._loaded.move_to_end(cache_key)
                return self._loaded[cache_key]
        material = self.store.open(self._seal_label(record.name, entry.version), str(entry.material))
        key = vc.load_private(record.kind_ops.kind, material)
        with self._loaded_lock:
            self._loaded[cache_key] = key
            while len(self._loaded) > _LOADED_CACHE_SIZE:
                self._loaded.popitem(last=False)
        return key

    def _use(self, op: str, ref: str, fn: Callable[[vc.KindOps, Any], T]) -> tuple[str, T]:
        """``fn(kind operations, key object)`` for ``op`` on ``ref`` after the state checks,
        audited with the version used; ``(exact URI, result)``."""
        with self._audited(op, ref) as line:
            record, entry = self._usable_parsed(str(line.key), line.version, op)
            line.version = entry.version
            return f"local:{record.name}/{entry.version}", fn(record.kind_ops, self._key_object(record, entry))

    def identity(self, ref: str, op: str = "wrapKey") -> str:
        """The exact URI (``local:NAME/V``) ``op`` on ``ref`` would use now."""
        with self._audited("identity", ref) as line:
            record, entry = self._usable_parsed(str(line.key), line.version, op)
            return f"local:{record.name}/{entry.version}"

    def wrap_key(self, ref: str, key: bytes, algorithm: str | None = None) -> tuple[str, bytes]:
        """Wrap ``key``: ``A256KWP`` (RFC 5649, the default) or ``A256KW`` (RFC 3394) for aes256
        keys, ``RSA-OAEP-256`` for rsa keys.  Returns ``(exact URI, wrapped)``."""
        return self._use("wrapKey", ref, lambda kind, k: kind.wrap(k, key, kind.algorithm(algorithm)))

    def unwrap_key(self, ref: str, wrapped: bytes, algorithm: str | None = None) -> bytes:
        """Inverse of :meth:`wrap_key` (``ref`` should name the exact version); WrongKeyError on failure."""
        return self._use("unwrapKey", ref, lambda kind, k: kind.unwrap(k, wrapped, kind.algorithm(algorithm)))[1]

    def wrap_slot(self, ref: str, dek: bytes) -> KeySlot:
        """A key slot for ``dek`` under ``ref`` (the key kind's slot wrap; audited as wrapKey)."""
        def fn(kind: vc.KindOps, k: Any) -> tuple[int, bytes]:
            return kind.slot_algorithm(), kind.wrap(k, dek, kind.algorithm(None))

        exact, (algorithm, wrapped) = self._use("wrapKey", ref, fn)
        return KeySlot(exact, algorithm, wrapped)

    def unwrap_slot(self, slot: KeySlot) -> bytes:
        """The DEK of a key slot naming this vault's key (audited as unwrapKey); WrongKeyError
        when the key's kind does not open the slot's wrap algorithm, or the slot does not open."""
        def fn(kind: vc.KindOps, k: Any) -> bytes:
            algorithm = kind.slot_algorithms.get(slot.wrap_algorithm)
            if algorithm is None:
                raise WrongKeyError(f"{slot.key_uri} cannot open wrap algorithm {slot.wrap_algorithm}")
            return kind.unwrap(k, slot.wrapped_dek, algorithm)

        return self._use("unwrapKey", split_key_uri(slot.key_uri)[1], fn)[1]

    def encrypt(self, ref: str, data: bytes, associated_data: bytes | None = None) -> tuple[str, bytes]:
        """AES-256-GCM (aes256) or RSA-OAEP-256 (rsa); ``(exact URI, ciphertext)``."""
        return self._use("encrypt", ref, lambda kind, k: kind.encrypt(k, data, associated_data))

    def decrypt(self, ref: str, ciphertext: bytes, associated_data: bytes | None = None) -> bytes:
        return self._use("decrypt", ref, lambda kind, k: kind.decrypt(k, ciphertext, associated_data))[1]

    def sign(self, ref: str, data: bytes) -> tuple[str, bytes]:
        """Sign ``data`` (RSA-PSS-SHA256 or ECDSA-P256-SHA256): ``(exact URI, signature)``."""
        return self._use("sign", ref, lambda kind, k: kind.sign(k, data))

    def verify(self, ref: str, data: bytes, signature: bytes) -> str:
        """Verify under ``ref``; an unversioned ref tries every enabled version, newest first.

        Returns the exact URI of the version that verified; InvalidSignatureError otherwise.
        """
        candidates: list[int] = []
        with self.audit.scope("verify", ref, parse=_parse_ref, audit_ok=False) as line:  # the failure only
            if line.version is None:
                candidates = [v.version for v in reversed(self._load(str(line.key)).versions) if v.enabled]
        if line.version is not None:
            return self._use("verify", ref, lambda kind, k: kind.verify(k, data, signature))[0]
        error: EnvcryptError = KeyDisabledError(f"local:{line.key} has no enabled version")
        for candidate in candidates:
            try:
                return self.verify(f"{line.key}/{candidate}", data, signature)
            except EnvcryptError as exc:
                error = exc
        raise error

    def public_key_pem(self, ref: str) -> str:
        with self._audited("get-public-key", ref) as line:
            record = self._load(str(line.key))
            record.check_live()
            if line.version is None and not record.versions:
                raise KeyNotFoundError(f"local:{record.name} has no versions")
            entry = record.version_entry(line.version) if line.version else record.versions[-1]
            if not entry.public:
                raise KeyUsageError(f"local:{record.name} is a symmetric key: it has no public key")
            return entry.public

    # ------------------------------------------------------------ backup / restore

    def backup_key(self, name: str, passphrase: bytes | str | None = None) -> bytes:
        """An encrypted backup of one key (every version).  With a passphrase it restores
        into any vault; without, only into this one (sealed under the vault master key)."""
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        with self._audited("backup", name):
            record = self._load(name)
            record.check_live()
            materials = {str(v.version): b64e(self.store.open(self._seal_label(name, v.version), str(v.material)))
                         for v in record.versions}
            stripped = record.to_json()
            stripped["versions"] = [{k: x for k, x in v.items() if k != "material"} for v in stripped["versions"]]
            return pack_backup(name, {"record": stripped, "materials": materials}, passphrase, self.store.seal)

    def restore_key(self, blob: bytes, passphrase: bytes | str | None = None, *, force: bool = False) -> str:
        """Restore a key from :meth:`backup_key` (refused while a live key has the name).

        The backup's material goes through the checks of :meth:`import_key` (one validator,
        per version), its record through the shape and operation checks of :meth:`create_key`;
        public keys are recomputed from the material.  Restoring over a purged key (its
        tombstone) brings crypto-shredded material back: refused with KeyStateError unless
        ``force=True``.
        """
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        with self._audited("restore", None) as line:  # a refused backup is audited too
            name, record, materials = self._restorable(blob, passphrase)
            line.key = name
            with self.store.locked():
                with contextlib.suppress(KeyNotFoundError):
                    existing = self._load(name)
                    if not existing.purged:
                        raise KeyStateError(f"key local:{name} already exists (delete and purge it first)")
                    if not force:
                        raise KeyStateError(
                            f"local:{name} was purged (crypto-shredded): restoring a backup over it brings "
                            "the destroyed material back; pass force=True (envcrypt key restore --force)"
                        )
                    # versions purged after the backup was made stay purged: never reuse their numbers
                    record = dataclasses.replace(
                        record, purged_through=max(record.purged_through, existing.purged_through))
                record = dataclasses.replace(record, versions=tuple(
                    dataclasses.replace(v, material=self.store.seal(self._seal_label(name, v.version),
                                                                    materials[v.version]))
                    for v in record.versions))
                line.extra["generation"] = self._store(record)
            forget_key(f"local:{name}")
            return f"local:{name}"

    def _restorable(self, blob: bytes, passphrase: bytes | None) -> tuple[str, KeyRecord, dict[int, bytes]]:
        """A backup's name, record (without material) and validated material per version."""
        name, payload = unpack_backup(blob, passphrase, self.store.open)
        record, materials = restorable(name, payload["record"], payload["materials"])
        return name, record, materials


class LocalVaultResolver:
    """``local:`` key URIs, resolved against a :class:`LocalVault` through its public operations.

    DEKs are wrapped with AES-KWP under aes256 keys, or RSA-OAEP-SHA256 under rsa
    keys; the slot names the exact version.  ``local:default`` is created on first use.
    """

    scheme: ClassVar[str] = "local"
    options: ClassVar[frozenset[str]] = frozenset({"vault"})
    #: the DEK cache is off by default for local keys (wrapping is cheap)
    cache_by_default: ClassVar[bool] = False

    def __init__(self, vault: str | os.PathLike[str] | LocalVault | None = None) -> None:
        self.vault = vault if isinstance(vault, LocalVault) else LocalVault(vault)

    def __repr__(self) -> str:
        return f"LocalVaultResolver({self.vault!r})"

    def _auto_create(self, key_uri: str) -> None:
        """Before a write: ``local:default`` (no version) is created on first use, with the
        vault if need be (``envcrypt.encrypt(data)`` works on a fresh machine).  Any other key
        needs an existing vault: a mistyped vault path is reported, never created."""
        try:
            name, version = parse_local_uri(key_uri)
        except InvalidKeyUriError:
            return  # reported (and audited) by the vault operation itself
        if version is None and name == AUTO_CREATED_KEY:
            if not self.vault.key_exists(name):
                with contextlib.suppress(KeyStateError):
                    self.vault.create_key(name)
            return
        if not self.vault.store.initialised():  # (the message is built only when it is raised)
            self.vault.store.require(f"no key {key_uri}")

    def check_usable(self, key_uri: str, op: str = "wrapKey") -> None:
        """Raise the key error ``op`` (``wrapKey``, ``unwrapKey``) under ``key_uri`` (an exact
        version) would raise now.

        Asked before a cached DEK serves another write (envcrypt.envelope) or a rewrite of an
        object (slots.open_slots): another process may have disabled, deleted or purged the
        key since the DEK was cached.  A read of the record (kept while its files are
        unchanged), no audit line (nothing is wrapped).
        """
        self.vault.check_usable(split_key_uri(key_uri)[1], op)

    def identity(self, key_uri: str) -> str:
        self._auto_create(key_uri)
        return self.vault.identity(split_key_uri(key_uri)[1])

    def wrap(self, key_uri: str, dek: bytes, encryption_context: Mapping[str, str]) -> KeySlot:
        self._auto_create(key_uri)
        return self.vault.wrap_slot(split_key_uri(key_uri)[1], dek)

    def unwrap(self, slot: KeySlot, encryption_context: Mapping[str, str]) -> bytes:
        parse_local_uri(slot.key_uri)
        if not self.vault.store.initialised():  # a read never creates a vault
            self.vault.store.require(f"cannot open {slot.key_uri}")
        return self.vault.unwrap_slot(slot)


# ---------------------------------------------------------------- module-level API


def vault_for(vault: str | os.PathLike[str] | LocalVault | None = None) -> LocalVault:
    """The (cached) vault for a path, ``$ENVCRYPT_VAULT`` when None."""
    if isinstance(vault, LocalVault):
        return vault
    from .base import get_resolver

    resolver = get_resolver("local", vault=os.fspath(vault) if vault is not None else None)
    return resolver.vault  # type: ignore[attr-defined, no-any-return]


def _ref(key_uri: str) -> str:
    return split_key_uri(key_uri)[1] if key_uri.startswith("local:") else key_uri


def sign(key_uri: str, data: bytes, *, vault: str | os.PathLike[str] | LocalVault | None = None) -> bytes:
    """Sign ``data`` with a vault rsa or ec-p256 key (``local:NAME[/V]``); the signature bytes."""
    return vault_for(vault).sign(_ref(key_uri), data)[1]


def sign_versioned(key_uri: str, data: bytes, *, vault: str | os.PathLike[str] | LocalVault | None = None) -> tuple[str, bytes]:
    """Like :func:`sign`, also returning the exact key version URI that signed."""
    return vault_for(vault).sign(_ref(key_uri), data)


def verify(key_uri: str, data: bytes, signature: bytes, *,
           vault: str | os.PathLike[str] | LocalVault | None = None) -> str:
    """Verify a signature; returns the exact key URI that verified, else InvalidSignatureError."""
    return vault_for(vault).verify(_ref(key_uri), data, signature)


def public_key_pem(key_uri: str, *, vault: str | os.PathLike[str] | LocalVault | None = None) -> str:
    return vault_for(vault).public_key_pem(_ref(key_uri))
