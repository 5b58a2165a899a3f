"""Typed key records of the local vault: parsed and validated once, on load.

A record file (``keys/NAME.json``, authenticated by vault_store.py) becomes a frozen
:class:`KeyRecord` holding frozen :class:`KeyVersion` entries, the way format.py turns
header bytes into a ``KeySlot``: every later use trusts the types.  A change is a new
record (``dataclasses.replace``) written back with :meth:`KeyRecord.to_json`, which writes
the fields the vault has always written (the on-disk format does not change).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidKeyUriError, KeyDeletedError, KeyNotFoundError, KeyUsageError, VaultError
from . import vault_crypto as vc
from .vault_files import b64d

__all__ = ["KeyRecord", "KeyVersion", "NAME", "check_name", "new_record", "restorable"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TIMES = ("created", "not_before", "expires", "deleted", "scheduled_purge", "purged")
#: the record fields a key backup may carry (the record without generation and mac)
RECORD_FIELDS = frozenset({"name", "kind", "ops", "enabled", *_TIMES, "transfer", "versions", "purged_through"})
VERSION_FIELDS = frozenset({"version", "created", "enabled", "origin", "public"})


def check_name(name: Any) -> str:
    """``name`` if it is a valid local key name; InvalidKeyUriError otherwise."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidKeyUriError(f"invalid local key name: {name!r}")
    return name


def check_kind(kind: Any) -> str:
    if kind not in vc.KINDS:
        raise KeyUsageError(f"unknown key kind {kind!r} (one of {', '.join(vc.KINDS)})")
    return str(kind)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class KeyVersion:
    version: int
    created: int | None
    enabled: bool
    origin: str
    #: the material sealed under the vault master key (base64); None in a key backup
    material: str | None = dataclasses.field(repr=False)
    public: str | None

    @classmethod
    def parse(cls, entry: Any, previous: int, with_material: bool) -> KeyVersion:
        if not isinstance(entry, dict) or not _is_int(entry.get("version")) or entry["version"] <= previous:
            raise ValueError
        enabled, origin = entry.get("enabled", True), entry.get("origin", "")
        public, created, material = entry.get("public"), entry.get("created"), entry.get("material")
        if not isinstance(enabled, bool) or not isinstance(origin, str) \
                or (public is not None and not isinstance(public, str)) \
                or (created is not None and not _is_int(created)) \
                or (with_material and not isinstance(material, str)):
            raise ValueError
        return cls(entry["version"], created, enabled, origin, material if with_material else None, public)

    def to_json(self) -> dict[str, Any]:
        out = {"version": self.version, "created": self.created, "enabled": self.enabled,
               "origin": self.origin, "material": self.material, "public": self.public}
        if self.material is None:
            del out["material"]
        return out


@dataclass(frozen=True)
class KeyRecord:
    """One key: state and versions.  ``kind`` is None only for a purged key's tombstone."""

    name: str
    kind: str | None
    ops: tuple[str, ...]
    enabled: bool
    transfer: bool
    created: int | None
    not_before: int | None
    expires: int | None
    deleted: int | None
    scheduled_purge: int | None
    purged: int | None
    versions: tuple[KeyVersion, ...]
    purged_through: int

    @classmethod
    def parse(cls, record: dict[str, Any], name: str, *, with_material: bool = True) -> KeyRecord:
        """The record if it has the shape the vault writes (and names ``name``); VaultError otherwise."""
        if record.get("name") != name:  # e.g. keys/a.json copied over keys/b.json
            raise VaultError(f"the key record for local:{name} names another key: refusing to use it")
        field = "versions"
        try:
            for field in _TIMES:
                if record.get(field) is not None and not _is_int(record[field]):
                    raise ValueError
            field = "purged_through"
            through = record.get("purged_through", 0)
            if not _is_int(through) or through < 0:
                raise ValueError
            field = "versions"
            raw_versions = record.get("versions")
            if not isinstance(raw_versions, list) or (record.get("purged") and raw_versions):
                raise ValueError
            if record.get("purged"):
                return cls(name, None, (), False, False, None, None, None, None, None, record["purged"], (), through)
            field = "kind"
            kind = record.get("kind")
            if kind not in vc.KINDS:
                raise ValueError
            for field in ("enabled", "transfer"):
                if not isinstance(record.get(field, False), bool):
                    raise ValueError
            field = "ops"
            ops, transfer = record.get("ops"), bool(record.get("transfer", False))
            allowed = vc.TRANSFER_OPS if transfer else frozenset(vc.ALL_OPS)
            if not isinstance(ops, list) or not all(isinstance(op, str) and op in allowed for op in ops):
                raise ValueError
            field, versions, previous = "versions", [], 0
            for entry in raw_versions:
                versions.append(KeyVersion.parse(entry, previous, with_material))
                previous = versions[-1].version
        except ValueError:
            raise VaultError(f"corrupt key record for local:{name} (field {field!r})") from None
        return cls(name, kind, tuple(ops), bool(record.get("enabled", False)), transfer, record.get("created"),
                   record.get("not_before"), record.get("expires"), record.get("deleted"),
                   record.get("scheduled_purge"), None, tuple(versions), through)

    def to_json(self) -> dict[str, Any]:
        """The record as stored (without ``generation`` and ``mac``, which the store adds)."""
        if self.purged:
            return {"name": self.name, "purged": self.purged, "purged_through": self.purged_through,
                    "versions": []}
        return {
            "name": self.name, "kind": self.kind, "ops": list(self.ops), "enabled": self.enabled,
            "created": self.created, "not_before": self.not_before, "expires": self.expires,
            "deleted": self.deleted, "scheduled_purge": self.scheduled_purge, "purged": None,
            "transfer": self.transfer, "versions": [v.to_json() for v in self.versions],
            "purged_through": self.purged_through,
        }

    # ------------------------------------------------------------ reading

    @property
    def uri(self) -> str:
        return f"local:{self.name}"

    @property
    def live_versions(self) -> tuple[KeyVersion, ...]:
        return tuple(v for v in self.versions if v.enabled)

    @property
    def last_version(self) -> int:
        """The highest version number ever used (purged ones included)."""
        return max([v.version for v in self.versions] + [self.purged_through])

    @property
    def kind_ops(self) -> vc.KindOps:
        if self.kind is None:
            raise KeyDeletedError(f"local:{self.name} was purged: data under it is unrecoverable")
        return vc.OPS[self.kind]

    def version_entry(self, version: int) -> KeyVersion:
        for entry in self.versions:
            if entry.version == version:
                return entry
        if version <= self.purged_through:
            raise KeyDeletedError(f"local:{self.name}/{version} was purged: data under it is unrecoverable")
        raise KeyNotFoundError(f"no version {version} of local:{self.name}")

    def check_live(self) -> None:
        if self.purged:
            raise KeyDeletedError(f"local:{self.name} was purged: data under it is unrecoverable")
        if self.deleted:
            raise KeyDeletedError(f"local:{self.name} is deleted (recoverable until it is purged)")

    def ops_hint(self, op: str) -> str:
        """Which key (``--kind``/``--ops``) would allow ``op``, for a KeyAccessDeniedError."""
        name, kind, ops = self.name, str(self.kind), self.ops
        have = f"it is {kind} with --ops {','.join(ops) or '(none)'}"
        if self.transfer:
            return f"{have}, a BYOK transfer key (it only opens import packages)"
        if op in vc.SUPPORTED_OPS.get(kind, frozenset()) and not (
                kind == vc.RSA and (vc.SIGN_OPS if op in vc.ENCRYPT_OPS else vc.ENCRYPT_OPS) & set(ops)):
            return f"{have}; allow it with: envcrypt key update {name} --ops {','.join([*ops, op])}"
        if op in vc.SIGN_OPS:
            return (f"{have}; signing needs a signing key: envcrypt key create NAME --kind ec-p256 "
                    "(or --kind rsa)")
        return (f"{have}; wrapping data keys needs an aes256 key: envcrypt key create NAME "
                "(or an RSA wrapping key: --kind rsa --ops wrapKey,unwrapKey,encrypt,decrypt)")

    def summary(self, versions: bool) -> dict[str, Any]:
        """What ``list`` and ``show`` print (no material)."""
        live = self.live_versions
        out: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "ops": list(self.ops), "enabled": self.enabled,
            "created": self.created, "not_before": self.not_before, "expires": self.expires,
            "deleted": self.deleted, "scheduled_purge": self.scheduled_purge, "transfer": self.transfer,
            "uri": self.uri, "current_version": live[-1].version if live else None,
            "version_count": len(self.versions),
        }
        if versions:
            out["versions"] = [{"version": v.version, "created": v.created, "enabled": v.enabled,
                                "origin": v.origin, "public": v.public} for v in self.versions]
        return out

    # ------------------------------------------------------------ changing (new records)

    def with_version(self, entry: KeyVersion) -> KeyRecord:
        return dataclasses.replace(self, versions=(*self.versions, entry))

    def with_version_enabled(self, version: int, enabled: bool) -> KeyRecord:
        self.version_entry(version)
        return dataclasses.replace(self, versions=tuple(
            dataclasses.replace(v, enabled=enabled) if v.version == version else v for v in self.versions))

    def tombstone(self, now: int) -> KeyRecord:
        return KeyRecord(self.name, None, (), False, False, None, None, None, None, None, now, (), self.last_version)


def new_record(name: str, kind: str, ops: Iterable[str], now: int, *, transfer: bool = False,
               not_before: int | None = None, expires: int | None = None,
               previous: KeyRecord | None = None) -> KeyRecord:
    """A key without versions yet (numbers continue after a purged ``previous``); ``ops`` as
    :func:`~.vault_crypto.check_ops` returned them (checked before any material is made)."""
    return KeyRecord(name, kind, tuple(ops), True, transfer, now, not_before, expires, None, None, None, (),
                     previous.purged_through if previous is not None else 0)


def restorable(name: str, raw: Any, packed: Any) -> tuple[KeyRecord, dict[int, bytes]]:
    """A key backup's record (without material) and its material per version, every version
    through the one validator of imported material (size for aes256, type and bits for
    rsa/ec), the record through the shape and operation checks; public keys recomputed."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or not isinstance(raw, dict) \
            or not isinstance(packed, dict):
        raise VaultError("the key backup is inconsistent")
    raw = {k: v for k, v in raw.items() if k not in ("generation", "mac")}
    if not set(raw) <= RECORD_FIELDS or not all(
            isinstance(v, dict) and set(v) <= VERSION_FIELDS for v in raw.get("versions") or ()):
        raise VaultError("the key backup is inconsistent (unexpected record fields)")
    record = KeyRecord.parse(raw, name, with_material=False)
    if record.purged or not record.versions or record.kind is None:
        raise VaultError("the key backup is inconsistent")
    kind = record.kind
    vc.check_ops(kind, record.ops, transfer=record.transfer)
    if record.transfer and kind != vc.RSA:
        raise VaultError("the key backup is inconsistent (a transfer key is an rsa key)")
    materials: dict[int, bytes] = {}
    versions = []
    for entry in record.versions:
        if str(entry.version) not in packed:
            raise VaultError("the key backup is inconsistent")
        material = vc.normalize_import(kind, b64d(packed[str(entry.version)]))
        materials[entry.version] = material
        versions.append(dataclasses.replace(entry, public=vc.public_pem(kind, vc.load_private(kind, material))))
    if len(packed) != len(materials):
        raise VaultError("the key backup is inconsistent")
    return dataclasses.replace(record, versions=tuple(versions)), materials
