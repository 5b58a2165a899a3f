"""The vault directory: safe file handling and the vault master key.

Layout (directory 0700, every file 0600, no symlinks anywhere)::

    VAULT/
      vault.json     format 2: {"format": 2, "master": "keyfile", "mac": HEX} or
                     {"format": 2, "master": "argon2id", "argon2id": {...}, "salt": B64,
                     "sealed_master": B64, "mac": HEX}; ``mac`` is HMAC-SHA256 under
                     HKDF(master, "envcrypt vault config mac") over "envcrypt vault config" NUL
                     canonical JSON of the other fields: mode and parameters are authenticated
      master.key     32 random bytes (key-file mode only), created on first use
      index.json     {"format": 1, "generation": G, "keys": {NAME: GEN}, "secrets": {NAME: GEN},
                     "mac": HEX} (HMAC under the record key, label "index"): the generation of
                     every record; a write in progress shows [OLD, NEW]
      keys/NAME.json one record per key (key material sealed under the master key; the
                     whole record, with its ``generation``, MACed under a key derived from it,
                     bound to NAME)
      secrets/NAME.json
      audit.log      hash-chained JSON lines (see audit.py); its first line, ``vault-init``,
                     records the master mode and format and is MACed under the audit key
      .lock          flock for updates of keys, secrets and the index; .audit.lock for the
                     log; .init.lock for creating and upgrading vault.json

The master key seals key material with AES-256-GCM; the associated data names
what is sealed (``key:NAME/VERSION``, ``secret:NAME/VERSION``), so sealed
blobs cannot be swapped between records.

Opening the vault (once per VaultStore, whatever the number of threads): the
master key is accepted only if it authenticates vault.json (format 2), the
audit log's genesis line (when the log exists), the index and every record file
present; then the derived keys are published in one assignment.  A vault made
before format 2 (no ``mac``) is upgraded in place once, under the locks, after
those checks, and a ``vault-upgrade`` line enters the audit chain, so a
vault.json stripped of its mac later is refused.  A record whose generation is
older than the index entry is a replayed copy: refused (VaultError).  Limits:
replacing the whole directory (log, head, index and records together) with an
older copy, or with a brand-new vault, cannot be detected without a copy of the
audit head kept elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hmac
import json
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import VaultError, VaultNotFoundError

__all__ = ["VaultStore", "Argon2Params", "default_vault_path", "PASSPHRASE_ENV"]

PASSPHRASE_ENV = "ENVCRYPT_VAULT_PASSPHRASE"
CONFIG_FILE = "vault.json"
MASTER_KEY_FILE = "master.key"
LOCK_FILE = ".lock"
INIT_LOCK_FILE = ".init.lock"
INDEX_FILE = "index.json"
AUDIT_LOG_FILE = "audit.log"
#: the vault.json format this code writes; format 1 (no mac) is upgraded on first use
CONFIG_FORMAT = 2
INDEX_FORMAT = 1
#: record sections: directory -> MAC label prefix
SECTIONS = {"keys": "key", "secrets": "secret"}
MAX_GENESIS_LINE = 64 * 1024
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


def default_vault_path() -> Path:
    """``$ENVCRYPT_VAULT``, else ``$XDG_DATA_HOME/envcrypt/vault`` (``~/.local/share/...``)."""
    configured = os.environ.get("ENVCRYPT_VAULT")
    if configured:
        return Path(configured).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data_home) / "envcrypt" / "vault"


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: Any) -> bytes:
    if not isinstance(text, str):
        raise VaultError("corrupt base64 field in the vault")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise VaultError("corrupt base64 field in the vault") from None


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


def check_private(path: Path, want_dir: bool) -> None:
    """Refuse symlinks, wrong file types and group/other permissions."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise VaultError(f"refusing to use a symlink in the vault: {path}")
    if want_dir != stat.S_ISDIR(st.st_mode):
        raise VaultError(f"unexpected file type in the vault: {path}")
    if st.st_mode & 0o077:
        raise VaultError(f"insecure permissions on {path} (must not be group/other accessible)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise VaultError(f"{path} is owned by another user")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync dir), mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private(path: Path) -> bytes:
    """Read a vault file after checking it; FileNotFoundError when missing."""
    check_private(path, want_dir=False)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(read_private(path))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # bytes json cannot decode, too deep
        raise VaultError(f"corrupt vault file: {path.name}") from None
    if not isinstance(value, dict):
        raise VaultError(f"corrupt vault file: {path.name}")
    try:  # "\ud800" escapes decode to lone surrogates, which no later encode() accepts
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise VaultError(f"corrupt vault file: {path.name}") from None
    return value


def canonical(value: Any) -> bytes:
    """The canonical JSON every MAC in the vault is computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def write_json(path: Path, value: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(value, indent=1, sort_keys=True).encode())


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created 0600); safe across processes and threads."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def hmac_sha256(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 (``cryptography``), hex."""
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize().hex()


def _hkdf(raw: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, info).derive(raw)


@dataclass(frozen=True, eq=False)
class _MasterKeys:
    """The master key and every key derived from it: built whole, then published in one
    assignment, so no thread ever sees half of it.  Never shown, never pickled."""

    aead: AESGCM
    audit: bytes
    record: bytes
    config: bytes

    @classmethod
    def derive(cls, raw: bytes) -> _MasterKeys:
        return cls(
            aead=AESGCM(raw),
            audit=_hkdf(raw, b"envcrypt vault audit chain"),
            record=_hkdf(raw, b"envcrypt vault record mac"),
            config=_hkdf(raw, b"envcrypt vault config mac"),
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
        return hmac_sha256(self.record, label.encode() + b"\0" + canonical(body))

    def audit_mac(self, entry: dict[str, Any]) -> str:
        return hmac_sha256(self.audit, canonical({k: v for k, v in entry.items() if k != "mac"}))


def _mac_matches(given: Any, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def _is_gen(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _allowed_generations(entry: Any) -> frozenset[int] | None:
    """An index entry: GEN, or [OLD, NEW] while a write is in progress; None when malformed."""
    if _is_gen(entry):
        return frozenset({entry})
    if isinstance(entry, list) and 1 <= len(entry) <= 2 and all(_is_gen(g) for g in entry):
        return frozenset(entry)
    return None


_CONFIG_FIELDS = {
    "keyfile": {"format", "master", "mac"},
    "argon2id": {"format", "master", "argon2id", "salt", "sealed_master", "mac"},
}


class VaultStore:
    """The vault directory and its master key.  The master key never leaves this object:
    no repr, no pickling (only the path travels)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, passphrase: bytes | str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_vault_path()
        self._given_path = path is not None
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        self._passphrase = passphrase
        self._keys: _MasterKeys | None = None
        self._keys_lock = threading.Lock()
        #: called (with the genesis fields) when this object creates the vault, before
        #: vault.json is published: the audit log writes its ``vault-init`` line
        self.init_hooks: list[Callable[[dict[str, Any]], None]] = []
        #: called (with the upgrade fields) when this object upgrades a format-1 vault
        self.upgrade_hooks: list[Callable[[dict[str, Any]], None]] = []

    def __repr__(self) -> str:
        return f"VaultStore({str(self.path)!r})"

    def __reduce__(self) -> Any:
        return (type(self), (str(self.path),))

    # ------------------------------------------------------------ layout

    def ensure_dir(self, sub: str | None = None) -> Path:
        if not self.path.exists():
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_private(self.path, want_dir=True)
        if sub is None:
            return self.path
        directory = self.path / sub
        if not directory.exists():
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
        check_private(directory, want_dir=True)
        return directory

    @contextlib.contextmanager
    def locked(self, name: str = LOCK_FILE) -> Iterator[None]:
        """An exclusive flock on ``name`` in the vault.  For the vault lock, the master key is
        opened first (opening may take .init.lock and the vault lock itself)."""
        if name == LOCK_FILE:
            self._derived()
        self.ensure_dir()
        with flocked(self.path / name):
            yield

    # ------------------------------------------------------------ creating the vault

    def init(self, passphrase: bytes | str | None = None, params: Argon2Params | None = None) -> None:
        """Create the vault's master key: a key file, or one sealed under a passphrase."""
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        with self.locked(INIT_LOCK_FILE):
            self._init_locked(passphrase, params)

    def _leftovers(self) -> list[str]:
        """Files of a vault that has no vault.json and no master.key (a new master key there
        would not authenticate them)."""
        found = [name for name in (AUDIT_LOG_FILE, INDEX_FILE)
                 if (self.path / name).exists() and (self.path / name).stat().st_size > 0]
        for section in SECTIONS:
            if (self.path / section).is_dir() and any((self.path / section).glob("*.json")):
                found.append(f"{section}/")
        return found

    def _init_locked(self, passphrase: bytes | None, params: Argon2Params | None) -> None:
        """Create the vault (the caller holds .init.lock).  vault.json is written last: until
        it exists, readers wait on .init.lock, so nobody sees a half-made vault."""
        if (self.path / CONFIG_FILE).exists() or (self.path / MASTER_KEY_FILE).exists():
            raise VaultError(f"the vault at {self.path} is already initialised")
        leftovers = self._leftovers()
        if leftovers:
            raise VaultError(
                f"the directory {self.path} holds files of an earlier vault ({', '.join(leftovers)}) "
                "but no vault.json or master.key: refusing to create a new master key over them"
            )
        master = os.urandom(MASTER_KEY_SIZE)
        config: dict[str, Any]
        if passphrase is None:
            config = {"format": CONFIG_FORMAT, "master": "keyfile"}
        else:
            params = params or Argon2Params.from_config(ARGON2_DEFAULT)
            salt = os.urandom(SALT_SIZE)
            wrapping = AESGCM(params.derive(passphrase, salt))
            nonce = os.urandom(NONCE_SIZE)
            sealed = wrapping.encrypt(nonce, master, b"envcrypt vault master key")
            config = {"format": CONFIG_FORMAT, "master": "argon2id", "argon2id": params.as_dict(),
                      "salt": b64e(salt), "sealed_master": b64e(nonce + sealed)}
            self._passphrase = passphrase
        keys = _MasterKeys.derive(master)
        config["mac"] = keys.config_mac(config)
        if passphrase is None:
            atomic_write(self.path / MASTER_KEY_FILE, master)
        self._keys = keys  # no second passphrase derivation for the first audit line
        for hook in self.init_hooks:
            hook({"master": config["master"], "format": CONFIG_FORMAT})
        write_json(self.path / CONFIG_FILE, config)

    def _supplied_passphrase(self) -> bytes | None:
        if self._passphrase is not None:
            return self._passphrase
        env = os.environ.get(PASSPHRASE_ENV)
        return env.encode("utf-8") if env else None

    def _config(self) -> dict[str, Any]:
        """vault.json, creating the vault on first use; a vault made before vault.json existed
        (a bare master.key) reads as a format-1 key-file vault."""
        path = self.path / CONFIG_FILE
        if not path.exists():
            self.ensure_dir()
            with self.locked(INIT_LOCK_FILE):  # wait for a creation in progress elsewhere
                if not path.exists():
                    if (self.path / MASTER_KEY_FILE).exists():
                        return {"format": 1, "master": "keyfile"}
                    # first use: a key file, or the supplied passphrase seals the master key
                    self._init_locked(self._supplied_passphrase(), None)
        return read_json(path)

    def initialised(self) -> bool:
        """Whether the vault exists (has its config or master key file); creates nothing."""
        return (self.path / CONFIG_FILE).exists() or (self.path / MASTER_KEY_FILE).exists()

    def require(self, what: str = "") -> None:
        """Raise ``VaultNotFoundError`` naming the directory unless the vault exists; creates nothing.

        Read paths call this first: a mistyped ``$ENVCRYPT_VAULT`` or ``--vault`` must not
        silently become a new, empty vault."""
        if not self.initialised():
            subject = f"{what}: " if what else ""
            raise VaultNotFoundError(
                f"{subject}no vault at {self.path} (from {self.origin}); create one with "
                "`envcrypt vault init` or `envcrypt key create NAME`, or point --vault / $ENVCRYPT_VAULT "
                "at an existing vault")

    @property
    def origin(self) -> str:
        """Where this vault's path came from, for messages."""
        if self._given_path:
            return "the path given"
        return "$ENVCRYPT_VAULT" if os.environ.get("ENVCRYPT_VAULT") else "the default location"

    def master_mode(self) -> str:
        mode = self._config().get("master")
        if mode not in ("keyfile", "argon2id"):
            raise VaultError(f"unknown vault master key mode {mode!r}")
        return str(mode)

    # ------------------------------------------------------------ opening the vault

    @staticmethod
    def _config_format(config: dict[str, Any]) -> int:
        fmt, mode = config.get("format"), config.get("master")
        if not isinstance(mode, str) or mode not in _CONFIG_FIELDS:
            raise VaultError(f"unknown vault master key mode {mode!r}")
        if fmt == 1:
            if "mac" in config:
                raise VaultError("corrupt vault.json (a format 1 config has no mac)")
            return 1
        if fmt == CONFIG_FORMAT:
            if set(config) != _CONFIG_FIELDS[mode]:
                raise VaultError("corrupt vault.json (unexpected or missing fields)")
            return CONFIG_FORMAT
        raise VaultError(f"unsupported vault.json format {fmt!r}")

    def _master_bytes(self, config: dict[str, Any]) -> bytes:
        mode = config.get("master")
        passphrase = self._supplied_passphrase()
        if mode == "keyfile":
            if passphrase is not None:
                raise VaultError(
                    f"a vault passphrase was given (argument or ${PASSPHRASE_ENV}) but the vault at "
                    f"{self.path} uses a master key file: refusing (was vault.json replaced?)"
                )
            raw = read_private(self.path / MASTER_KEY_FILE)
            if len(raw) != MASTER_KEY_SIZE:
                raise VaultError("the vault master key file is corrupt")
            return raw
        params = Argon2Params.from_config(config.get("argon2id"))  # refuses parameters above the cap
        if passphrase is None:
            raise VaultError(f"the vault is passphrase-protected: set ${PASSPHRASE_ENV}")
        salt = b64d(config.get("salt"))
        sealed = b64d(config.get("sealed_master"))
        if len(salt) < 8 or len(sealed) != NONCE_SIZE + MASTER_KEY_SIZE + 16:
            raise VaultError("corrupt vault.json: bad salt or sealed master key")
        try:
            return AESGCM(params.derive(passphrase, salt)).decrypt(
                sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], b"envcrypt vault master key"
            )
        except InvalidTag:
            raise VaultError("wrong vault passphrase") from None

    def _audit_lines(self) -> Iterator[dict[str, Any]]:
        """The audit log's lines, parsed (unverified; a malformed line ends the scan)."""
        path = self.path / AUDIT_LOG_FILE
        if not path.exists():
            return
        check_private(path, want_dir=False)
        with open(path, "rb") as f:
            for raw in f:
                if len(raw) > MAX_GENESIS_LINE:
                    return
                try:
                    entry = json.loads(raw)
                except ValueError:
                    return
                if not isinstance(entry, dict):
                    return
                yield entry

    def _check_genesis(self, keys: _MasterKeys, config: dict[str, Any], fmt: int) -> None:
        """The audit log's first line must be a ``vault-init`` line MACed under this master key
        and name this master mode (when the log exists); a format-1 config must not belong to a
        vault the log says was created or upgraded with a mac (a downgrade)."""
        lines = self._audit_lines()
        first = next(lines, None)
        if first is None:
            if (self.path / AUDIT_LOG_FILE).exists() and (self.path / AUDIT_LOG_FILE).stat().st_size:
                raise VaultError("the vault's audit log does not start with a readable genesis line")
            return
        if first.get("op") != "vault-init" or not _mac_matches(first.get("mac"), keys.audit_mac(first)):
            raise VaultError(
                f"the master key of the vault at {self.path} does not authenticate its audit log "
                "(vault.json or master.key replaced?): refusing to use it"
            )
        if first.get("master", config["master"]) != config["master"]:
            raise VaultError(
                f"the vault at {self.path} was created in {first.get('master')!r} mode but vault.json "
                f"now says {config['master']!r}: refusing to use it"
            )
        if fmt >= CONFIG_FORMAT:
            return
        first_format = first.get("format", 1)
        upgraded = (_is_gen(first_format) and first_format >= CONFIG_FORMAT) or any(
            line.get("op") == "vault-upgrade" and _mac_matches(line.get("mac"), keys.audit_mac(line))
            for line in lines
        )
        if upgraded:
            raise VaultError(
                "vault.json has lost its mac but the audit log says this vault uses the authenticated "
                "format (a downgrade): refusing to use it"
            )

    def _check_records(self, keys: _MasterKeys) -> bool:
        """Every record file must authenticate under this master key; the index too.  True
        when the index is missing and every record predates it (build the index)."""
        with_generation = False
        for section, prefix in SECTIONS.items():
            directory = self.path / section
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.json")):
                try:
                    record = read_json(path)
                except FileNotFoundError:
                    continue  # deleted meanwhile
                if record.get("name") != path.stem:
                    raise VaultError(f"the vault record {section}/{path.name} names another {prefix}: refusing it")
                if not _mac_matches(record.get("mac"), keys.record_mac(f"{prefix}:{path.stem}", record)):
                    raise VaultError(
                        f"the vault record {section}/{path.name} failed authentication under the vault "
                        "master key (edited, copied, or master.key/vault.json replaced): refusing the vault"
                    )
                with_generation = with_generation or "generation" in record
        if self._read_index(keys) is not None:  # read after the records: see write_record
            return False
        if with_generation:
            raise VaultError(f"the vault index ({INDEX_FILE}) is missing: refusing to use the vault")
        return True

    def _open_master(self) -> tuple[_MasterKeys, bool, bool]:
        """Derive the master keys and authenticate the vault with them; nothing is published
        or sealed before every check passed.  ``(keys, config needs upgrade, index needed)``."""
        config = self._config()
        if self._keys is not None:  # this object just created the vault
            return self._keys, False, False
        fmt = self._config_format(config)
        keys = _MasterKeys.derive(self._master_bytes(config))
        if fmt >= CONFIG_FORMAT and not _mac_matches(config.get("mac"), keys.config_mac(config)):
            raise VaultError("vault.json failed authentication under the vault master key (edited or replaced)")
        self._check_genesis(keys, config, fmt)
        build_index = self._check_records(keys)
        return keys, fmt < CONFIG_FORMAT, build_index

    def _upgrade(self, upgrade_config: bool, build_index: bool) -> None:
        """Bring a vault made by an earlier release to the current format, once, under the locks
        (after the master key authenticated it)."""
        with self.locked(INIT_LOCK_FILE):
            done: dict[str, Any] = {}
            if upgrade_config:
                path = self.path / CONFIG_FILE
                config = read_json(path) if path.exists() else {"format": 1, "master": "keyfile"}
                if self._config_format(config) < CONFIG_FORMAT:
                    config = {**config, "format": CONFIG_FORMAT}
                    config["mac"] = self._derived().config_mac(config)
                    write_json(self.path / CONFIG_FILE, config)
                    done["format"] = CONFIG_FORMAT
            if build_index:
                with self.locked():
                    if not (self.path / INDEX_FILE).exists():
                        self._build_index()
                        done["index"] = INDEX_FORMAT
            if done:
                for hook in self.upgrade_hooks:
                    hook(done)

    def _derived(self) -> _MasterKeys:
        keys = self._keys
        if keys is not None:
            return keys
        with self._keys_lock:
            keys = self._keys
            if keys is None:
                keys, upgrade_config, build_index = self._open_master()
                self._keys = keys  # one assignment: every derived key at once
                if upgrade_config or build_index:
                    self._upgrade(upgrade_config, build_index)
        return keys

    def audit_key(self) -> bytes:
        return self._derived().audit

    def audit_mac(self, entry: dict[str, Any]) -> str:
        """The MAC of an audit line (every field but ``mac``)."""
        return self._derived().audit_mac(entry)

    def record_mac(self, label: str, record: dict[str, Any]) -> str:
        """HMAC-SHA256 (key derived from the master key) of a record's canonical JSON without
        its ``mac`` field, bound to ``label``: state, generation, versions and sealed material."""
        return self._derived().record_mac(label, record)

    def check_record_mac(self, label: str, record: dict[str, Any]) -> None:
        """VaultError unless ``record["mac"]`` is :meth:`record_mac` of the record."""
        if not _mac_matches(record.get("mac"), self.record_mac(label, record)):
            raise VaultError(f"the vault record for {label} failed authentication (edited or copied)")

    # ------------------------------------------------------------ the index of generations

    def _read_index_raw(self) -> bytes | None:
        try:
            return read_private(self.path / INDEX_FILE)
        except FileNotFoundError:
            return None

    def _parse_index(self, raw: bytes | None, keys: _MasterKeys | None = None) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            index = json.loads(raw)
        except ValueError:
            raise VaultError(f"corrupt vault file: {INDEX_FILE}") from None
        if not isinstance(index, dict) or set(index) != {"format", "generation", "mac", *SECTIONS} \
                or index["format"] != INDEX_FORMAT or not _is_gen(index["generation"]) \
                or not all(isinstance(index[s], dict) for s in SECTIONS):
            raise VaultError(f"corrupt vault file: {INDEX_FILE}")
        keys = keys or self._derived()
        if not _mac_matches(index.get("mac"), keys.record_mac("index", index)):
            raise VaultError(f"the vault index ({INDEX_FILE}) failed authentication (edited or replaced)")
        return index

    def _read_index(self, keys: _MasterKeys | None = None) -> dict[str, Any] | None:
        return self._parse_index(self._read_index_raw(), keys)

    def read_index(self) -> dict[str, Any] | None:
        """The authenticated index (None when the vault has none yet); VaultError when it fails."""
        return self._read_index()

    def _write_index(self, index: dict[str, Any]) -> None:
        index["mac"] = self.record_mac("index", index)
        write_json(self.path / INDEX_FILE, index)

    def _build_index(self) -> None:
        """The index of a vault made before it existed: every record at generation 0 (the
        caller holds the lock and checked that no record carries a generation)."""
        index: dict[str, Any] = {"format": INDEX_FORMAT, "generation": 0}
        for section in SECTIONS:
            directory = self.path / section
            names = sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []
            index[section] = dict.fromkeys(names, 0)
        self._write_index(index)

    def _new_index(self) -> dict[str, Any]:
        return {"format": INDEX_FORMAT, "generation": 0, **{s: {} for s in SECTIONS}}

    def load_record(self, section: str, name: str, path: Path) -> dict[str, Any]:
        """Read a record, check its MAC and that its generation is the one the index holds
        (a replayed older copy is refused, naming it).  FileNotFoundError when missing.

        Lock-free: the index is read before and after the record; a write in between
        changes the index bytes (every write raises the generation), and the read is retried.
        """
        label = f"{SECTIONS[section]}:{name}"
        for _ in range(50):
            before = self._read_index_raw()
            record = read_json(path)
            after = self._read_index_raw()
            if before == after:
                break
        else:
            raise VaultError(f"the vault record for {label} kept changing while being read")
        if record.get("name") != name:  # e.g. keys/a.json copied over keys/b.json
            raise VaultError(f"the vault record for {label} names another {SECTIONS[section]}: "
                             "refusing to use it")
        self.check_record_mac(label, record)
        self._check_generation(section, name, label, record, self._parse_index(after))
        return record

    @staticmethod
    def _check_generation(section: str, name: str, label: str, record: dict[str, Any],
                          index: dict[str, Any] | None) -> None:
        generation = record.get("generation", 0)
        if not _is_gen(generation):
            raise VaultError(f"corrupt vault record for {label} (field 'generation')")
        if index is None:
            if generation:
                raise VaultError(f"the vault index ({INDEX_FILE}) is missing: refusing {label}")
            return
        entry = index[section].get(name)
        if entry is None:
            raise VaultError(f"the vault record for {label} is not in the vault index (copied in or replayed)")
        allowed = _allowed_generations(entry)
        if allowed is None:
            raise VaultError(f"corrupt vault file: {INDEX_FILE}")
        if generation not in allowed:
            raise VaultError(
                f"the vault record for {label} is generation {generation} but the vault index says "
                f"{max(allowed)}: an older copy was put back (rollback): refusing it"
            )

    def write_record(self, section: str, name: str, path: Path, record: dict[str, Any] | None) -> int:
        """Store a record (or delete it: ``None``) at the next generation; the caller holds the
        vault lock.  The index first accepts the old and the new generation, then the record
        is written, then the index holds only the new one: a crash leaves a usable vault.
        Returns the generation (audit lines carry it)."""
        keys = self._derived()
        index = self._read_index(keys) or self._new_index()
        generation = int(index["generation"]) + 1
        old = index[section].get(name)
        index["generation"] = generation
        index[section][name] = [generation] if old is None else [max(_allowed_generations(old) or {0}), generation]
        self._write_index(index)
        if record is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            record["generation"] = generation
            record["mac"] = keys.record_mac(f"{SECTIONS[section]}:{name}", record)
            write_json(path, record)
        index[section][name] = generation
        self._write_index(index)
        return generation

    # ------------------------------------------------------------ sealing

    def _aead(self) -> AESGCM:
        return self._derived().aead

    def seal(self, label: str, data: bytes) -> str:
        """AES-256-GCM under the master key, bound to ``label``; base64 text."""
        nonce = os.urandom(NONCE_SIZE)
        return b64e(nonce + self._aead().encrypt(nonce, data, label.encode()))

    def open(self, label: str, sealed_b64: str) -> bytes:
        sealed = b64d(sealed_b64)
        if len(sealed) < NONCE_SIZE + 16:
            raise VaultError(f"sealed vault data for {label} failed to open")
        try:
            return self._aead().decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], label.encode())
        except InvalidTag:
            raise VaultError(f"sealed vault data for {label} failed to open") from None
