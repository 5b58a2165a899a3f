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

State rules: ``not_before`` in the future refuses every use; after ``expires`` a
key still unwraps, decrypts and verifies (old data stays readable) but refuses
wrapKey, encrypt and sign (no new data under it).

Key URIs: ``local:NAME`` (newest enabled version) or ``local:NAME/VERSION``; the
management methods also take a bare ``NAME``.  Key slots name the exact version.
"""

from __future__ import annotations

import contextlib
import os
import re
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
from .audit import AuditLog, outcome_of
from .base import WRAP_AES256_KWP, WRAP_RSA_OAEP_SHA256, split_key_uri
from .byok import pack_backup, unpack_backup, unwrap_transfer
from .cache import forget_key
from .vault_secrets import SecretStore
from .vault_store import Argon2Params, VaultStore, b64d, b64e, default_vault_path

__all__ = [
    "LocalVault", "LocalVaultResolver", "VaultError", "default_vault_path", "parse_local_uri",
    "sign", "sign_versioned", "verify", "public_key_pem", "vault_for",
]

KEYS_DIR = "keys"
AUTO_CREATED_KEY = "default"
DEFAULT_RETENTION_DAYS = 7
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LOADED_CACHE_SIZE = 256
T = TypeVar("T")


def parse_local_uri(key_uri: str) -> tuple[str, int | None]:
    """``local:NAME[/VERSION]`` -> ``(NAME, VERSION or None)``."""
    scheme, rest = split_key_uri(key_uri)
    if scheme != "local":
        raise InvalidKeyUriError(f"not a local: key URI: {key_uri!r}")
    return _parse_ref(rest)


def _parse_ref(ref: str) -> tuple[str, int | None]:
    if not isinstance(ref, str):
        raise TypeError(f"a key name or URI is a str, not {type(ref).__name__}")
    if ref.startswith("local:"):
        return parse_local_uri(ref)
    name, sep, version = ref.partition("/")
    if not _NAME.match(name):
        raise InvalidKeyUriError(f"invalid local key name: {name!r}")
    if not sep:
        return name, None
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise InvalidKeyUriError(f"invalid local key version: {version!r}")
    return name, int(version)


def _now() -> int:
    return int(time.time())


_TIMES = ("created", "not_before", "expires", "deleted", "scheduled_purge", "purged")


def _shown(ref: Any) -> str:
    """An invalid key reference as the audit log shows it (bounded, printable)."""
    return repr(ref)[:128]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_record(record: dict[str, Any], name: str, *, with_material: bool = True) -> dict[str, Any]:
    """The record if it has the shape this module writes (and names ``name``); VaultError otherwise."""
    def corrupt(field: str) -> VaultError:
        return VaultError(f"corrupt key record for local:{name} (field {field!r})")

    if record.get("name") != name:  # e.g. keys/a.json copied over keys/b.json
        raise VaultError(f"the key record for local:{name} names another key: refusing to use it")
    for field in _TIMES:
        if record.get(field) is not None and not _is_int(record[field]):
            raise corrupt(field)
    if not _is_int(record.get("purged_through", 0)) or record.get("purged_through", 0) < 0:
        raise corrupt("purged_through")
    versions = record.get("versions")
    if not isinstance(versions, list):
        raise corrupt("versions")
    if record.get("purged"):
        if versions:
            raise corrupt("versions")
        return record
    if record.get("kind") not in vc.KINDS:
        raise corrupt("kind")
    ops = record.get("ops")
    allowed = vc.TRANSFER_OPS if record.get("transfer") else frozenset(vc.ALL_OPS)
    if not isinstance(ops, list) or not all(isinstance(op, str) and op in allowed for op in ops):
        raise corrupt("ops")
    for field in ("enabled", "transfer"):
        if not isinstance(record.get(field, False), bool):
            raise corrupt(field)
    previous = 0
    for entry in versions:
        if not isinstance(entry, dict) or not _is_int(entry.get("version")) or entry["version"] <= previous:
            raise corrupt("versions")
        previous = entry["version"]
        if not isinstance(entry.get("enabled", True), bool) or not isinstance(entry.get("origin", ""), str):
            raise corrupt("versions")
        if entry.get("public") is not None and not isinstance(entry["public"], str):
            raise corrupt("versions")
        if entry.get("created") is not None and not _is_int(entry["created"]):
            raise corrupt("versions")
        if with_material and not isinstance(entry.get("material"), str):
            raise corrupt("versions")
    return record


def _ops_hint(record: dict[str, Any], op: str) -> str:
    """Which key (``--kind``/``--ops``) would allow ``op``, for a KeyAccessDeniedError."""
    name, kind, ops = record["name"], record["kind"], record["ops"]
    have = f"it is {kind} with --ops {','.join(ops) or '(none)'}"
    if record.get("transfer"):
        return f"{have}, a BYOK transfer key (it only opens import packages)"
    if op in vc.SUPPORTED_OPS.get(kind, frozenset()) and not (
            kind == vc.RSA and (vc.SIGN_OPS if op in vc.ENCRYPT_OPS else vc.ENCRYPT_OPS) & set(ops)):
        return f"{have}; allow it with: envcrypt key update {name} --ops {','.join([*ops, op])}"
    if op in vc.SIGN_OPS:
        return (f"{have}; signing needs a signing key: envcrypt key create NAME --kind ec-p256 "
                "(or --kind rsa)")
    return (f"{have}; wrapping data keys needs an aes256 key: envcrypt key create NAME "
            "(or an RSA wrapping key: --kind rsa --ops wrapKey,unwrapKey,encrypt,decrypt)")


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

    def _key_path(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidKeyUriError(f"invalid local key name: {name!r}")
        return self.store.ensure_dir(KEYS_DIR) / f"{name}.json"

    def _load(self, name: str) -> dict[str, Any]:
        """The record of ``name``: authenticated (MAC), of the generation the index holds, well formed."""
        try:
            record = self.store.load_record(KEYS_DIR, name, self._key_path(name))
        except FileNotFoundError:
            raise KeyNotFoundError(f"no key local:{name} in the vault at {self.path}") from None
        return _check_record(record, name)

    def _store(self, record: dict[str, Any]) -> int:
        """Write a record at the next generation (the caller holds the vault lock); the generation."""
        return self.store.write_record(KEYS_DIR, record["name"], self._key_path(record["name"]), record)

    def _update(self, op: str, ref: str, change: Callable[[dict[str, Any], int | None], T]) -> T:
        """Load, change and store a record under the vault lock; audited with the new generation.
        The process's cached DEKs under the key are dropped after the change."""
        extra: dict[str, Any] = {}

        def run() -> T:
            name, version = _parse_ref(ref)
            with self.store.locked():
                record = self._load(name)
                result = change(record, version)
                extra["generation"] = self._store(record)
            forget_key(f"local:{name}")
            return result

        return self._audited(op, ref, None, run, extra)

    def _audited(self, op: str, ref: str | None, version: int | None, fn: Callable[[], T],
                 extra: dict[str, Any] | None = None) -> T:
        """Run ``fn`` and audit it: ``ok`` (with ``extra``, which ``fn`` may fill) or the failure,
        of any exception type.  ``ref`` is parsed here, inside the audited section, so an
        invalid name is audited too."""
        name = ref
        if ref is not None:
            try:
                name, parsed = _parse_ref(ref)
                version = version if parsed is None else parsed
            except Exception as exc:
                self.audit.record(op, _shown(ref), version, outcome_of(exc))
                raise
        try:
            result = fn()
        except Exception as exc:
            self.audit.record(op, name, version, outcome_of(exc))
            raise
        self.audit.record(op, name, version, "ok", **(extra or {}))
        return result

    def _seal_label(self, name: str, version: int) -> str:
        return f"key:{name}/{version}"

    def _new_version(self, record: dict[str, Any], material: bytes, origin: str) -> str:
        version = max([v["version"] for v in record["versions"]] + [record.get("purged_through", 0)]) + 1
        key = vc.load_private(record["kind"], material)
        record["versions"].append({
            "version": version, "created": _now(), "enabled": True, "origin": origin,
            "material": self.store.seal(self._seal_label(record["name"], version), material),
            "public": vc.public_pem(record["kind"], key),
        })
        return f"local:{record['name']}/{version}"

    @staticmethod
    def _fresh_record(name: str, kind: str, ops: Iterable[str] | None, previous: dict[str, Any] | None,
                      transfer: bool = False) -> dict[str, Any]:
        if kind not in vc.KINDS:
            raise KeyUsageError(f"unknown key kind {kind!r} (one of {', '.join(vc.KINDS)})")
        checked = vc.check_ops(kind, vc.DEFAULT_OPS[kind] if ops is None else ops, transfer=transfer)
        return {
            "name": name, "kind": kind, "ops": checked, "enabled": True, "created": _now(),
            "not_before": None, "expires": None, "deleted": None, "scheduled_purge": None,
            "purged": None, "transfer": False, "versions": [],
            "purged_through": (previous or {}).get("purged_through", 0),
        }

    def _create(self, op: str, name: str, kind: str, material: bytes | None, origin: str,
                ops: Iterable[str] | None, not_before: int | None, expires: int | None,
                transfer: bool = False) -> str:
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidKeyUriError(f"invalid local key name: {name!r}")
        if kind not in vc.KINDS:
            raise KeyUsageError(f"unknown key kind {kind!r} (one of {', '.join(vc.KINDS)})")
        if ops is not None and not isinstance(ops, (list, tuple, set, frozenset)):
            ops = list(ops)
        if ops is not None:
            vc.check_ops(kind, ops, transfer=transfer)  # before generating material
        material = vc.generate(kind) if material is None else material
        extra: dict[str, Any] = {}

        def run() -> str:
            with self.store.locked():
                previous = None
                with contextlib.suppress(KeyNotFoundError):
                    previous = self._load(name)
                if previous is not None and not previous.get("purged"):
                    if previous.get("deleted"):
                        raise KeyStateError(f"local:{name} is soft-deleted: recover or purge it first")
                    if op == "create" or previous["kind"] != kind:
                        raise KeyStateError(f"key local:{name} already exists")
                    record = previous  # import into an existing key adds a version
                else:
                    record = self._fresh_record(name, kind, ops, previous, transfer)
                    record.update(not_before=not_before, expires=expires, transfer=transfer)
                uri = self._new_version(record, material, origin)
                extra["generation"] = self._store(record)
                return uri

        return self._audited(op, name, None, run, extra)

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
        def unpack() -> bytes:
            record, entry = self._usable(transfer_key_uri, vc.IMPORT_OP)
            if not record.get("transfer"):
                raise KeyAccessDeniedError(f"local:{record['name']} is not a transfer key")
            return vc.normalize_import(kind, unwrap_transfer(self._key_object(record, entry), package))

        material = self._audited("byok-unwrap", transfer_key_uri, None, unpack)
        return self._create("import-byok", name, kind, material, "byok", ops, None, None)

    def rotate_key(self, name: str) -> str:
        """Add a new version; new writes use it, older versions still unwrap."""
        def change(record: dict[str, Any], version: int | None) -> str:
            self._check_live(record)
            return self._new_version(record, vc.generate(record["kind"]), "generated")

        return self._update("rotate", name, change)

    def set_enabled(self, ref: str, enabled: bool) -> None:
        """Enable or disable a key (``NAME``) or one version (``NAME/V``)."""
        def change(record: dict[str, Any], version: int | None) -> None:
            self._check_live(record)
            if version is None:
                record["enabled"] = enabled
            else:
                self._version_entry(record, version)["enabled"] = enabled

        self._update("enable" if enabled else "disable", ref, change)

    def disable_key(self, ref: str) -> None:
        self.set_enabled(ref, False)

    def enable_key(self, ref: str) -> None:
        self.set_enabled(ref, True)

    def set_validity(self, name: str, *, not_before: int | None = None, expires: int | None = None) -> None:
        """Set ``not_before``/``expires`` (Unix seconds; None clears)."""
        def change(record: dict[str, Any], version: int | None) -> None:
            self._check_live(record)
            record["not_before"], record["expires"] = not_before, expires

        self._update("set-validity", name, change)

    def set_ops(self, name: str, ops: Iterable[str]) -> None:
        """Replace the permitted operations of a key."""
        wanted = list(ops)

        def change(record: dict[str, Any], version: int | None) -> None:
            self._check_live(record)
            record["ops"] = vc.check_ops(record["kind"], wanted, transfer=bool(record.get("transfer")))

        self._update("set-ops", name, change)

    def delete_key(self, name: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> None:
        """Soft-delete: every use fails with KeyDeletedError until ``recover``; ``purge`` destroys it."""
        def change(record: dict[str, Any], version: int | None) -> None:
            self._check_live(record)
            record["deleted"] = _now()
            record["scheduled_purge"] = record["deleted"] + retention_days * 86400

        self._update("delete", name, change)

    def recover_key(self, name: str) -> None:
        def change(record: dict[str, Any], version: int | None) -> None:
            if record.get("purged"):
                raise KeyDeletedError(f"local:{record['name']} was purged and cannot be recovered")
            if not record.get("deleted"):
                raise KeyStateError(f"local:{record['name']} is not deleted")
            record["deleted"] = record["scheduled_purge"] = None

        self._update("recover", name, change)

    def purge_key(self, name: str) -> None:
        """Destroy a soft-deleted key's material (crypto-shredding); a tombstone remains."""
        def change(record: dict[str, Any], version: int | None) -> None:
            if record.get("purged"):
                raise KeyDeletedError(f"local:{record['name']} was already purged")
            if not record.get("deleted"):
                raise KeyStateError(f"local:{record['name']} must be deleted before it is purged")
            through = max([v["version"] for v in record["versions"]] + [record.get("purged_through", 0)])
            key_name = record["name"]
            record.clear()
            record.update(name=key_name, purged=_now(), purged_through=through, versions=[])
            with self._loaded_lock:
                self._loaded.clear()

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
        return not record.get("purged")

    def list_keys(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        return self._audited("list", None, None, lambda: self._list_keys(include_deleted))

    def _list_keys(self, include_deleted: bool) -> list[dict[str, Any]]:
        directory = self.store.ensure_dir(KEYS_DIR)
        out = []
        for path in sorted(directory.glob("*.json")):
            record = self._load(path.stem)
            if record.get("purged") or (record.get("deleted") and not include_deleted):
                continue
            out.append(self._summary(record, versions=False))
        return out

    def show_key(self, ref: str) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            name, _ = _parse_ref(ref)
            record = self._load(name)
            if record.get("purged"):
                raise KeyDeletedError(f"local:{name} was purged")
            return self._summary(record, versions=True)

        return self._audited("show", ref, None, run)

    @staticmethod
    def _summary(record: dict[str, Any], versions: bool) -> dict[str, Any]:
        out = {k: record.get(k) for k in ("name", "kind", "ops", "enabled", "created", "not_before",
                                          "expires", "deleted", "scheduled_purge", "transfer")}
        live = [v for v in record["versions"] if v.get("enabled", True)]
        out["uri"] = f"local:{record['name']}"
        out["current_version"] = live[-1]["version"] if live else None
        out["version_count"] = len(record["versions"])
        if versions:
            out["versions"] = [{k: v.get(k) for k in ("version", "created", "enabled", "origin", "public")}
                               for v in record["versions"]]
        return out

    # ------------------------------------------------------------ use

    @staticmethod
    def _check_live(record: dict[str, Any]) -> None:
        if record.get("purged"):
            raise KeyDeletedError(f"local:{record['name']} was purged: data under it is unrecoverable")
        if record.get("deleted"):
            raise KeyDeletedError(f"local:{record['name']} is deleted (recoverable until it is purged)")

    @staticmethod
    def _version_entry(record: dict[str, Any], version: int) -> dict[str, Any]:
        for entry in record["versions"]:
            if entry["version"] == version:
                found: dict[str, Any] = entry
                return found
        if version <= record.get("purged_through", 0):
            raise KeyDeletedError(f"local:{record['name']}/{version} was purged: data under it is unrecoverable")
        raise KeyNotFoundError(f"no version {version} of local:{record['name']}")

    def _usable(self, ref: str, op: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The record and version entry for ``op`` on ``ref``, after every state check."""
        name, version = _parse_ref(ref)
        record = self._load(name)
        self._check_live(record)
        if op not in record["ops"]:
            raise KeyAccessDeniedError(f"local:{name} does not permit {op}: {_ops_hint(record, op)}")
        if not record["enabled"]:
            raise KeyDisabledError(f"local:{name} is disabled")
        now = _now()
        if record.get("not_before") and now < record["not_before"]:
            raise KeyDisabledError(f"local:{name} is not valid yet")
        if record.get("expires") and now >= record["expires"] and op in ("wrapKey", "encrypt", "sign"):
            raise KeyDisabledError(f"local:{name} has expired (it still opens existing data)")
        if version is None:
            live = [v for v in record["versions"] if v.get("enabled", True)]
            if not live:
                raise KeyDisabledError(f"local:{name} has no enabled version")
            return record, live[-1]
        entry = self._version_entry(record, version)
        if not entry.get("enabled", True):
            raise KeyDisabledError(f"local:{name}/{version} is disabled")
        return record, entry

    def _key_object(self, record: dict[str, Any], entry: dict[str, Any]) -> Any:
        cache_key = (record["name"], entry["version"], entry["material"])
        with self._loaded_lock:
            if cache_key in self._loaded:
                self._loaded.move_to_end(cache_key)
                return self._loaded[cache_key]
        material = self.store.open(self._seal_label(record["name"], entry["version"]), entry["material"])
        key = vc.load_private(record["kind"], material)
        with self._loaded_lock:
            self._loaded[cache_key] = key
            while len(self._loaded) > _LOADED_CACHE_SIZE:
                self._loaded.popitem(last=False)
        return key

    def _use(self, op: str, ref: str, fn: Callable[[dict[str, Any], Any], T]) -> tuple[str, T]:
        try:
            name, version = _parse_ref(ref)
        except Exception as exc:
            self.audit.record(op, _shown(ref), None, outcome_of(exc))
            raise
        found: list[int] = []

        def run() -> tuple[str, T]:
            record, entry = self._usable(ref, op)
            found.append(entry["version"])
            return f"local:{name}/{entry['version']}", fn(record, self._key_object(record, entry))

        try:
            result = run()
        except Exception as exc:
            self.audit.record(op, name, found[0] if found else version, outcome_of(exc))
            raise
        self.audit.record(op, name, found[0], "ok")
        return result

    def identity(self, ref: str, op: str = "wrapKey") -> str:
        """The exact URI (``local:NAME/V``) ``op`` on ``ref`` would use now."""
        def run() -> str:
            record, entry = self._usable(ref, op)
            return f"local:{record['name']}/{entry['version']}"

        return self._audited("identity", ref, None, run)

    def wrap_key(self, ref: str, key: bytes, algorithm: str = "A256KWP") -> tuple[str, bytes]:
        """Wrap ``key``: ``A256KWP`` (RFC 5649) or ``A256KW`` (RFC 3394) for aes256 keys,
        ``RSA-OAEP-256`` for rsa keys.  Returns ``(exact URI, wrapped)``."""
        def fn(record: dict[str, Any], k: Any) -> bytes:
            if record["kind"] == vc.RSA:
                return vc.rsa_oaep_encrypt(k.public_key(), key)
            return vc.kw_wrap(k, key) if algorithm == "A256KW" else vc.kwp_wrap(k, key)

        return self._use("wrapKey", ref, fn)

    def unwrap_key(self, ref: str, wrapped: bytes, algorithm: str = "A256KWP") -> bytes:
        """Inverse of :meth:`wrap_key` (``ref`` should name the exact version); WrongKeyError on failure."""
        def fn(record: dict[str, Any], k: Any) -> bytes:
            if record["kind"] == vc.RSA:
                return vc.rsa_oaep_decrypt(k, wrapped)
            return vc.kw_unwrap(k, wrapped) if algorithm == "A256KW" else vc.kwp_unwrap(k, wrapped)

        return self._use("unwrapKey", ref, fn)[1]

    def encrypt(self, ref: str, data: bytes, associated_data: bytes | None = None) -> tuple[str, bytes]:
        """AES-256-GCM (aes256) or RSA-OAEP-256 (rsa); ``(exact URI, ciphertext)``."""
        def fn(record: dict[str, Any], k: Any) -> bytes:
            if record["kind"] == vc.RSA:
                return vc.rsa_oaep_encrypt(k.public_key(), data)
            return vc.gcm_encrypt(k, data, associated_data)

        return self._use("encrypt", ref, fn)

    def decrypt(self, ref: str, ciphertext: bytes, associated_data: bytes | None = None) -> bytes:
        def fn(record: dict[str, Any], k: Any) -> bytes:
            if record["kind"] == vc.RSA:
                return vc.rsa_oaep_decrypt(k, ciphertext)
            return vc.gcm_decrypt(k, ciphertext, associated_data)

        return self._use("decrypt", ref, fn)[1]

    def sign(self, ref: str, data: bytes) -> tuple[str, bytes]:
        """Sign ``data`` (RSA-PSS-SHA256 or ECDSA-P256-SHA256): ``(exact URI, signature)``."""
        return self._use("sign", ref, lambda record, k: vc.sign(record["kind"], k, data))

    def verify(self, ref: str, data: bytes, signature: bytes) -> str:
        """Verify under ``ref``; an unversioned ref tries every enabled version, newest first.

        Returns the exact URI of the version that verified; InvalidSignatureError otherwise.
        """
        try:
            name, version = _parse_ref(ref)
        except Exception as exc:
            self.audit.record("verify", _shown(ref), None, outcome_of(exc))
            raise
        if version is None:
            try:
                record = self._load(name)
            except Exception as exc:
                self.audit.record("verify", name, None, outcome_of(exc))
                raise
            candidates = [v["version"] for v in reversed(record["versions"]) if v.get("enabled", True)]
            error: EnvcryptError = KeyDisabledError(f"local:{name} has no enabled version")
            for candidate in candidates:
                try:
                    return self.verify(f"{name}/{candidate}", data, signature)
                except EnvcryptError as exc:
                    error = exc
            raise error
        return self._use("verify", ref, lambda r, k: vc.verify(r["kind"], k.public_key(), data, signature))[0]

    def public_key_pem(self, ref: str) -> str:
        def run() -> str:
            name, version = _parse_ref(ref)
            record = self._load(name)
            self._check_live(record)
            if version is None and not record["versions"]:
                raise KeyNotFoundError(f"local:{name} has no versions")
            entry = self._version_entry(record, version) if version else record["versions"][-1]
            if not entry.get("public"):
                raise KeyUsageError(f"local:{name} is a symmetric key: it has no public key")
            return str(entry["public"])

        return self._audited("get-public-key", ref, None, run)

    # ------------------------------------------------------------ backup / restore

    def backup_key(self, name: str, passphrase: bytes | str | None = None) -> bytes:
        """An encrypted backup of one key (every version).  With a passphrase it restores
        into any vault; without, only into this one (sealed under the vault master key)."""
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")

        def run() -> bytes:
            record = self._load(name)
            self._check_live(record)
            materials = {
                str(v["version"]): b64e(self.store.open(self._seal_label(name, v["version"]), v["material"]))
                for v in record["versions"]
            }
            stripped = {**{k: x for k, x in record.items() if k != "mac"},
                        "versions": [{k: x for k, x in v.items() if k != "material"} for v in record["versions"]]}
            payload = {"record": stripped, "materials": materials}
            return pack_backup(name, payload, passphrase, self.store.seal)

        return self._audited("backup", name, None, run)

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
        extra: dict[str, Any] = {}
        try:
            name, record, materials = self._restorable(blob, passphrase)
        except Exception as exc:  # a refused backup is audited too
            self.audit.record("restore", None, None, outcome_of(exc))
            raise

        def run() -> str:
            with self.store.locked():
                with contextlib.suppress(KeyNotFoundError):
                    existing = self._load(name)
                    if not existing.get("purged"):
                        raise KeyStateError(f"key local:{name} already exists (delete and purge it first)")
                    if not force:
                        raise KeyStateError(
                            f"local:{name} was purged (crypto-shredded): restoring a backup over it brings "
                            "the destroyed material back; pass force=True (envcrypt key restore --force)"
                        )
                    # versions purged after the backup was made stay purged: never reuse their numbers
                    record["purged_through"] = max(record.get("purged_through", 0), existing.get("purged_through", 0))
                for entry in record["versions"]:
                    raw = materials[entry["version"]]
                    entry["material"] = self.store.seal(self._seal_label(name, entry["version"]), raw)
                extra["generation"] = self._store(record)
            forget_key(f"local:{name}")
            return f"local:{name}"

        return self._audited("restore", name, None, run, extra)

    _RECORD_FIELDS = frozenset({"name", "kind", "ops", "enabled", "created", "not_before", "expires", "deleted",
                                "scheduled_purge", "purged", "transfer", "versions", "purged_through"})
    _VERSION_FIELDS = frozenset({"version", "created", "enabled", "origin", "public"})

    def _restorable(self, blob: bytes, passphrase: bytes | None) -> tuple[str, dict[str, Any], dict[int, bytes]]:
        """A backup's name, record (without material) and validated material per version."""
        name, payload = unpack_backup(blob, passphrase, self.store.open)
        record, packed = payload["record"], payload["materials"]
        if not _NAME.match(name) or not isinstance(record, dict) or not isinstance(packed, dict):
            raise VaultError("the key backup is inconsistent")
        record = {k: v for k, v in record.items() if k not in ("generation", "mac")}
        if not set(record) <= self._RECORD_FIELDS:
            raise VaultError("the key backup is inconsistent (unexpected record fields)")
        _check_record(record, name, with_material=False)
        if record.get("purged") or not record["versions"]:
            raise VaultError("the key backup is inconsistent")
        kind = record["kind"]
        vc.check_ops(kind, record["ops"], transfer=bool(record.get("transfer")))
        if record.get("transfer") and kind != vc.RSA:
            raise VaultError("the key backup is inconsistent (a transfer key is an rsa key)")
        materials: dict[int, bytes] = {}
        for entry in record["versions"]:
            if not set(entry) <= self._VERSION_FIELDS or str(entry["version"]) not in packed:
                raise VaultError("the key backup is inconsistent")
            # the one validator of imported material: size for aes256, type and bits for rsa/ec
            material = vc.normalize_import(kind, b64d(packed[str(entry["version"])]))
            materials[entry["version"]] = material
            entry["public"] = vc.public_pem(kind, vc.load_private(kind, material))
        if len(packed) != len(materials):
            raise VaultError("the key backup is inconsistent")
        return name, record, materials


class LocalVaultResolver:
    """``local:`` key URIs, resolved against a :class:`LocalVault`.

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
        self.vault.store.require(f"no key {key_uri}")

    def _require_vault(self, key_uri: str) -> None:
        """Before a read: the vault must exist (a read never creates one)."""
        self.vault.store.require(f"cannot open {key_uri}")

    def check_usable(self, key_uri: str) -> None:
        """Raise the key error a wrap under ``key_uri`` (an exact version) would raise now.

        Asked before a cached DEK serves another write (envcrypt.envelope): another process
        may have disabled, deleted or purged the key since the DEK was cached.  A read of
        the record, no audit line (nothing is wrapped).
        """
        self.vault._usable(split_key_uri(key_uri)[1], "wrapKey")

    def identity(self, key_uri: str) -> str:
        self._auto_create(key_uri)
        return self.vault.identity(split_key_uri(key_uri)[1])

    def wrap(self, key_uri: str, dek: bytes, encryption_context: Mapping[str, str]) -> KeySlot:
        self._auto_create(key_uri)

        def fn(record: dict[str, Any], k: Any) -> tuple[int, bytes]:
            if record["kind"] == vc.RSA:
                return WRAP_RSA_OAEP_SHA256, vc.rsa_oaep_encrypt(k.public_key(), dek)
            return WRAP_AES256_KWP, vc.kwp_wrap(k, dek)

        exact, (algorithm, wrapped) = self.vault._use("wrapKey", split_key_uri(key_uri)[1], fn)
        return KeySlot(exact, algorithm, wrapped)

    def unwrap(self, slot: KeySlot, encryption_context: Mapping[str, str]) -> bytes:
        parse_local_uri(slot.key_uri)
        self._require_vault(slot.key_uri)

        def fn(record: dict[str, Any], k: Any) -> bytes:
            if record["kind"] == vc.RSA and slot.wrap_algorithm == WRAP_RSA_OAEP_SHA256:
                return vc.rsa_oaep_decrypt(k, slot.wrapped_dek)
            if record["kind"] == vc.AES256 and slot.wrap_algorithm == WRAP_AES256_KWP:
                return vc.kwp_unwrap(k, slot.wrapped_dek)
            raise WrongKeyError(f"{slot.key_uri} cannot open wrap algorithm {slot.wrap_algorithm}")

        return self.vault._use("unwrapKey", split_key_uri(slot.key_uri)[1], fn)[1]


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
