"""The vault master key: how it is kept (key file or Argon2id passphrase) and the keys
derived from it (sealing, record and index MACs, audit chain, vault.json MAC).

See vault_store.py for the layout and when the master key is accepted.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import VaultError
from .vault_files import canonical

__all__ = ["Argon2Params", "MasterKeys", "ARGON2_DEFAULT", "BACKUP_ARGON2_MAX", "SALT_SIZE",
           "MASTER_KEY_SIZE", "NONCE_SIZE", "hmac_sha256", "mac_matches", "config_format", "CONFIG_FORMAT"]

#: the vault.json format this code writes; format 1 (no mac) is upgraded on first use
CONFIG_FORMAT = 2
MASTER_KEY_SIZE = 32
NONCE_SIZE = 12

# Argon2id bounds (memory in KiB).  Parameters read from vault.json above the
# caps are refused before any work is done, so a planted vault.json cannot
# make the process allocate gigabytes or spin for minutes.
ARGON2_DEFAULT = {"memory_cost": 64 * 1024, "iterations": 3, "lanes": 4}
ARGON2_MIN = {"memory_cost": 8 * 1024, "iterations": 1, "lanes": 1}
ARGON2_MAX = {"memory_cost": 1024 * 1024, "iterations": 16, "lanes": 16}
#: the lower cap for parameters in files that come from outside the vault (portable key
#: backups): 256 MiB and 8 iterations, so a crafted backup cannot make ``restore`` allocate
#: a gigabyte or spin for long; backups made here use ARGON2_DEFAULT, well under it
BACKUP_ARGON2_MAX = {"memory_cost": 256 * 1024, "iterations": 8, "lanes": 16}
SALT_SIZE = 16


class Argon2Params:
    """Bounded Argon2id parameters (memory in KiB)."""

    def __init__(self, memory_cost: int, iterations: int, lanes: int,
                 maximum: dict[str, int] | None = None) -> None:
        values = {"memory_cost": memory_cost, "iterations": iterations, "lanes": lanes}
        cap = ARGON2_MAX if maximum is None else maximum
        for name, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise VaultError(f"Argon2id {name} must be an integer")
            if not ARGON2_MIN[name] <= value <= cap[name]:
                raise VaultError(
                    f"Argon2id {name}={value} is outside the allowed range "
                    f"{ARGON2_MIN[name]}..{cap[name]}"
                )
        if memory_cost < 8 * lanes:
            raise VaultError("Argon2id memory_cost must be at least 8 KiB per lane")
        self.memory_cost, self.iterations, self.lanes = memory_cost, iterations, lanes

    @classmethod
    def from_config(cls, value: Any, where: str = "vault.json",
                    maximum: dict[str, int] | None = None) -> Argon2Params:
        """Parameters read from a file: exactly the three fields, each bounded; VaultError otherwise."""
        if not isinstance(value, dict) or set(value) != {"memory_cost", "iterations", "lanes"}:
            raise VaultError(f"corrupt Argon2id parameters in {where}")
        return cls(value["memory_cost"], value["iterations"], value["lanes"], maximum)

    def as_dict(self) -> dict[str, int]:
        return {"memory_cost": self.memory_cost, "iterations": self.iterations, "lanes": self.lanes}

    def derive(self, passphrase: bytes, salt: bytes) -> bytes:
        kdf = Argon2id(
            salt=salt, length=32, iterations=self.iterations, lanes=self.lanes,
            memory_cost=self.memory_cost,
        )
        return kdf.derive(passphrase)



def hmac_sha256(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 (``cryptography``), hex."""
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize().hex()


def _keyed(context: crypto_hmac.HMAC, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` from a keyed context (copied: the context itself is never finalised)."""
    mac = context.copy()
    mac.update(data)
    return mac.finalize().hex()


def _hkdf(raw: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, info).derive(raw)


@dataclass(frozen=True, eq=False)
class MasterKeys:
    """The master key and every key derived from it: built whole, then published in one
    assignment, so no thread ever sees half of it.  Never shown, never pickled."""

    aead: AESGCM
    audit: bytes
    record: bytes
    config: bytes
    #: HMAC contexts keyed once, copied per MAC (cheaper than keying one per line)
    _audit_hmac: crypto_hmac.HMAC
    _record_hmac: crypto_hmac.HMAC

    @classmethod
    def derive(cls, raw: bytes) -> MasterKeys:
        audit = _hkdf(raw, b"envcrypt vault audit chain")
        record = _hkdf(raw, b"envcrypt vault record mac")
        return cls(
            aead=AESGCM(raw), audit=audit, record=record, config=_hkdf(raw, b"envcrypt vault config mac"),
            _audit_hmac=crypto_hmac.HMAC(audit, hashes.SHA256()),
            _record_hmac=crypto_hmac.HMAC(record, hashes.SHA256()),
        )

    def __repr__(self) -> str:
        return "<vault master keys>"

    def __reduce__(self) -> Any:
        raise TypeError("vault master keys cannot be pickled")

    def config_mac(self, config: dict[str, Any]) -> str:
        body = {k: v for k, v in config.items() if k != "mac"}
        return hmac_sha256(self.config, b"envcrypt vault config\0" + canonical(body))

    def record_mac(self, label: str, record: dict[str, Any]) -> str:
        body = {k: v for k, v in record.items() if k != "mac"}
        return _keyed(self._record_hmac, label.encode() + b"\0" + canonical(body))

    def audit_mac(self, entry: dict[str, Any]) -> str:
        return _keyed(self._audit_hmac, canonical({k: v for k, v in entry.items() if k != "mac"}))

    def audit_mac_of(self, body: bytes) -> str:
        """The MAC of an audit line given the canonical JSON of its fields but ``mac``."""
        return _keyed(self._audit_hmac, body)


def mac_matches(given: Any, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


CONFIG_FIELDS = {
    "keyfile": {"format", "master", "mac"},
    "argon2id": {"format", "master", "argon2id", "salt", "sealed_master", "mac"},
}


def config_format(config: dict[str, Any]) -> int:
    """The format of a vault.json (1 or 2) after checking its fields; VaultError otherwise."""
    fmt, mode = config.get("format"), config.get("master")
    if not isinstance(mode, str) or mode not in CONFIG_FIELDS:
        raise VaultError(f"unknown vault master key mode {mode!r}")
    if fmt == 1:
        if "mac" in config:
            raise VaultError("corrupt vault.json (a format 1 config has no mac)")
        return 1
    if fmt == CONFIG_FORMAT:
        if set(config) != CONFIG_FIELDS[mode]:
            raise VaultError("corrupt vault.json (unexpected or missing fields)")
        return CONFIG_FORMAT
    raise VaultError(f"unsupported vault.json format {fmt!r}")
