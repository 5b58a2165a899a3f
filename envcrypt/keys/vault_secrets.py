"""The vault's small secrets store: versioned values sealed under the vault master key.

``secrets/NAME.json`` holds every version, each sealed with AES-256-GCM bound to
``secret:NAME/VERSION``, and the record names its file and carries a ``mac`` (as key
records do), so an edited or copied record is refused with VaultError.  Records carry a
``generation`` checked against the vault index, as key records do: a replayed older
record (or a deleted secret's file put back) is refused with VaultError.  Values are
bytes (at most 64 KiB); listings never show them.
Every call is audited (the value never is).
"""

from __future__ import annotations

import builtins
import copy
import re
import time
from pathlib import Path
from typing import Any

from ..errors import KeyNotFoundError, VaultError
from .audit import AuditLog, AuditScope, shown
from .vault_store import VaultStore

__all__ = ["SecretStore", "MAX_SECRET_SIZE"]

SECRETS_DIR = "secrets"
MAX_SECRET_SIZE = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked(record: dict[str, Any]) -> dict[str, Any]:
    """A stored secret record (the store checked that it names its file) if well formed."""
    versions = record.get("versions")
    if not isinstance(versions, list) or not all(
        isinstance(v, dict) and _is_int(v.get("version")) and _is_int(v.get("created"))
        and isinstance(v.get("value"), str) for v in versions
    ):
        raise VaultError(f"corrupt secret record for {record.get('name')!r}")
    return record


class SecretStore:
    def __init__(self, store: VaultStore, audit: AuditLog) -> None:
        self.store, self.audit = store, audit

    def __repr__(self) -> str:
        return f"SecretStore({str(self.store.path)!r})"

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid secret name: {name!r}")
        return self.store.ensure_dir(SECRETS_DIR) / f"{name}.json"

    def _load(self, name: str) -> dict[str, Any]:
        self._path(name)
        try:
            record = self.store.load_record(SECRETS_DIR, name, _checked)
        except FileNotFoundError:
            raise KeyNotFoundError(f"no secret {name!r} in the vault") from None
        return copy.deepcopy(record)  # kept by the store between calls: callers change their copy

    def _save(self, name: str, record: dict[str, Any] | None) -> int:
        """Write (or, with None, delete) a record at the next generation; the caller holds the lock."""
        return self.store.write_record(SECRETS_DIR, name, record)

    def _audited(self, op: str, name: Any) -> AuditScope:
        """The vault's one audited scope, tagged ``kind: secret`` (a name that is not a str is shown bounded)."""
        return self.audit.scope(op, name if isinstance(name, str) or name is None else shown(name), kind="secret")

    def set(self, name: str, value: bytes | str) -> int:
        """Store a new version of a secret; returns its version number."""
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if len(raw) > MAX_SECRET_SIZE:
            raise ValueError(f"a secret holds at most {MAX_SECRET_SIZE} bytes")
        with self._audited("secret-set", name) as line, self.store.locked():
            path = self._path(name)
            record: dict[str, Any] = self._load(name) if path.exists() else {"name": name, "versions": []}
            version = max([v["version"] for v in record["versions"]] + [0]) + 1
            record["versions"].append({
                "version": version, "created": int(time.time()),
                "value": self.store.seal(f"secret:{name}/{version}", raw),
            })
            line.extra["generation"] = self._save(name, record)
            line.version = version
            return int(version)

    def get(self, name: str, version: int | None = None) -> bytes:
        """The newest value, or a given version."""
        with self._audited("secret-get", name) as line:
            record = self._load(name)
            entries = record["versions"] if version is None else [
                v for v in record["versions"] if v["version"] == version]
            if not entries:
                raise KeyNotFoundError(f"no version {version} of secret {name!r}")
            entry = entries[-1]
            value = self.store.open(f"secret:{name}/{entry['version']}", entry["value"])
            line.version = entry["version"]
            return value

    def list(self) -> list[dict[str, Any]]:
        with self._audited("secret-list", None):
            out = []
            for path in sorted(self.store.ensure_dir(SECRETS_DIR).glob("*.json")):
                versions = self._load(path.stem)["versions"]
                out.append({"name": path.stem, "versions": len(versions),
                            "updated": versions[-1]["created"] if versions else None})
            return out

    def versions(self, name: str) -> builtins.list[dict[str, Any]]:
        with self._audited("secret-versions", name):
            return [{"version": v["version"], "created": v["created"]} for v in self._load(name)["versions"]]

    def delete(self, name: str) -> None:
        """Delete a secret and every version of it."""
        with self._audited("secret-delete", name) as line, self.store.locked():
            self._load(name)
            line.extra["generation"] = self._save(name, None)  # the index keeps the name: a copy put back is refused
