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

The parts live beside this module: vault_files.py (private files, atomic writes,
locks, stamps), vault_master.py (the master key, Argon2id, derived keys and MACs) and
vault_index.py (index generations, rollback checks, the record cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import VaultError, VaultNotFoundError
from .vault_files import (
    Stamp,
    atomic_write,
    b64d,
    b64e,
    canonical,
    check_private,
    checked_stamp,
    default_vault_path,
    flocked,
    read_json,
    read_private,
    stamp_of,
    write_json,
)
from .vault_index import (
    INDEX_FILE,
    INDEX_FORMAT,
    MAX_CACHED_RECORDS,
    SECTIONS,
    RecordCache,
    allowed_generations,
    build_index,
    check_generation,
    is_generation,
    new_index,
    parse_index,
    write_index,
)
from .vault_master import (
    ARGON2_DEFAULT,
    ARGON2_MAX,
    BACKUP_ARGON2_MAX,
    CONFIG_FORMAT,
    MASTER_KEY_SIZE,
    NONCE_SIZE,
    SALT_SIZE,
    Argon2Params,
    MasterKeys,
    config_format,
    mac_matches,
)

__all__ = ["VaultStore", "Argon2Params", "default_vault_path", "PASSPHRASE_ENV",
           # re-exported: the names other modules have always imported from here
           "ARGON2_DEFAULT", "ARGON2_MAX", "BACKUP_ARGON2_MAX", "SALT_SIZE", "SECTIONS", "b64d", "b64e", "canonical",
           "check_private"]

PASSPHRASE_ENV = "ENVCRYPT_VAULT_PASSPHRASE"
CONFIG_FILE = "vault.json"
MASTER_KEY_FILE = "master.key"
LOCK_FILE = ".lock"
INIT_LOCK_FILE = ".init.lock"
AUDIT_LOG_FILE = "audit.log"
MAX_GENESIS_LINE = 64 * 1024
T = TypeVar("T")


class VaultStore:
    """The vault directory and its master key.  The master key never leaves this object:
    no repr, no pickling (only the path travels)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, passphrase: bytes | str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_vault_path()
        self._given_path = path is not None
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        self._passphrase = passphrase
        self._keys: MasterKeys | None = None
        self._keys_lock = threading.Lock()
        #: (thread, keys) while that thread creates the vault (_init_locked)
        self._creating: tuple[int, MasterKeys] | None = None
        #: parsed records kept between operations (vault_index.RecordCache)
        self._records: RecordCache = RecordCache()
        self._root, self._index_path = "", ""
        self._paths: dict[tuple[str, str], tuple[str, str, str]] = {}
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
        keys = MasterKeys.derive(master)
        config["mac"] = keys.config_mac(config)
        if passphrase is None:
            atomic_write(self.path / MASTER_KEY_FILE, master)
        # The keys serve this thread's genesis line (no second passphrase derivation) but are
        # published to the other threads of this process only once vault.json is: until then
        # they wait on .init.lock like other processes, so no line precedes the genesis line.
        self._creating = (threading.get_ident(), keys)
        try:
            for hook in self.init_hooks:
                hook({"master": config["master"], "format": CONFIG_FORMAT})
            write_json(self.path / CONFIG_FILE, config)
        finally:
            self._creating = None
        self._keys = keys

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
        if self._keys is not None:
            return True  # opened (or created) by this object
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

    def _check_genesis(self, keys: MasterKeys, config: dict[str, Any], fmt: int) -> None:
        """The audit log's first line must be a ``vault-init`` line MACed under this master key
        and name this master mode (when the log exists); a format-1 config must not belong to a
        vault the log says was created or upgraded with a mac (a downgrade)."""
        lines = self._audit_lines()
        first = next(lines, None)
        if first is None:
            if (self.path / AUDIT_LOG_FILE).exists() and (self.path / AUDIT_LOG_FILE).stat().st_size:
                raise VaultError("the vault's audit log does not start with a readable genesis line")
            return
        if first.get("op") != "vault-init" or not mac_matches(first.get("mac"), keys.audit_mac(first)):
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
        upgraded = (is_generation(first_format) and first_format >= CONFIG_FORMAT) or any(
            line.get("op") == "vault-upgrade" and mac_matches(line.get("mac"), keys.audit_mac(line))
            for line in lines
        )
        if upgraded:
            raise VaultError(
                "vault.json has lost its mac but the audit log says this vault uses the authenticated "
                "format (a downgrade): refusing to use it"
            )

    def _check_records(self, keys: MasterKeys) -> bool:
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
                if not mac_matches(record.get("mac"), keys.record_mac(f"{prefix}:{path.stem}", record)):
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

    def _open_master(self) -> tuple[MasterKeys, bool, bool]:
        """Derive the master keys and authenticate the vault with them; nothing is published
        or sealed before every check passed.  ``(keys, config needs upgrade, index needed)``."""
        config = self._config()
        if self._keys is not None:  # this object just created the vault
            return self._keys, False, False
        fmt = config_format(config)
        keys = MasterKeys.derive(self._master_bytes(config))
        if fmt >= CONFIG_FORMAT and not mac_matches(config.get("mac"), keys.config_mac(config)):
            raise VaultError("vault.json failed authentication under the vault master key (edited or replaced)")
        self._check_genesis(keys, config, fmt)
        needs_index = self._check_records(keys)
        return keys, fmt < CONFIG_FORMAT, needs_index

    def _upgrade(self, upgrade_config: bool, needs_index: bool) -> None:
        """Bring a vault made by an earlier release to the current format, once, under the locks
        (after the master key authenticated it)."""
        with self.locked(INIT_LOCK_FILE):
            done: dict[str, Any] = {}
            if upgrade_config:
                path = self.path / CONFIG_FILE
                config = read_json(path) if path.exists() else {"format": 1, "master": "keyfile"}
                if config_format(config) < CONFIG_FORMAT:
                    config = {**config, "format": CONFIG_FORMAT}
                    config["mac"] = self._derived().config_mac(config)
                    write_json(self.path / CONFIG_FILE, config)
                    done["format"] = CONFIG_FORMAT
            if needs_index:
                with self.locked():
                    if not (self.path / INDEX_FILE).exists():
                        build_index(self.path, self._derived())
                        done["index"] = INDEX_FORMAT
            if done:
                for hook in self.upgrade_hooks:
                    hook(done)

    def _derived(self) -> MasterKeys:
        keys = self._keys
        if keys is not None:
            return keys
        creating = self._creating
        if creating is not None and creating[0] == threading.get_ident():
            return creating[1]  # the thread creating the vault, writing its genesis line
        with self._keys_lock:
            keys = self._keys
            if keys is None:
                keys, upgrade_config, needs_index = self._open_master()
                self._keys = keys  # one assignment: every derived key at once
                if upgrade_config or needs_index:
                    self._upgrade(upgrade_config, needs_index)
        return keys

    def audit_key(self) -> bytes:
        return self._derived().audit

    def audit_macs(self) -> tuple[Callable[[dict[str, Any]], str], Callable[[bytes], str]]:
        """The MAC functions of audit lines, of a line and of its canonical JSON (derives the
        master key first if need be)."""
        keys = self._derived()
        return keys.audit_mac, keys.audit_mac_of

    def audit_mac(self, entry: dict[str, Any]) -> str:
        """The MAC of an audit line (every field but ``mac``)."""
        return self._derived().audit_mac(entry)

    def record_mac(self, label: str, record: dict[str, Any]) -> str:
        """HMAC-SHA256 (key derived from the master key) of a record's canonical JSON without
        its ``mac`` field, bound to ``label``: state, generation, versions and sealed material."""
        return self._derived().record_mac(label, record)

    # ------------------------------------------------------------ the index of generations

    def _read_index_raw(self, seen: list[Stamp] | None = None) -> bytes | None:
        try:
            return read_private(self.path / INDEX_FILE, seen)
        except FileNotFoundError:
            return None

    def _read_index(self, keys: MasterKeys | None = None) -> dict[str, Any] | None:
        return parse_index(self._read_index_raw(), keys or self._derived())

    def read_index(self) -> dict[str, Any] | None:
        """The authenticated index (None when the vault has none yet); VaultError when it fails."""
        return self._read_index()

    def record_path(self, section: str, name: str) -> Path:
        """``SECTION/NAME.json`` (the caller validated ``name``)."""
        return self.path / section / f"{name}.json"

    def load_record(self, section: str, name: str, parse: Callable[[dict[str, Any]], T]) -> T:
        """``parse`` of a record whose MAC and generation (the one the index holds: a replayed
        older copy is refused, naming it) were checked.  FileNotFoundError when missing.

        Kept between calls (vault_index.RecordCache) while neither the record file nor the
        index changed: then two ``lstat`` calls are the whole cost; a change by any process
        is seen on the next call."""
        keys = self._derived()
        where = (section, name)
        paths = self._paths.get(where)
        if paths is None:
            paths = self._record_paths(where)
        root, directory, path = paths
        # one lstat per file, before reading (a later change shows); the checks of mode, type and
        # owner are run when the record is not kept: a kept record's stamps hold the mode and
        # owner that passed them, so equal stamps pass them again
        try:
            index_st: os.stat_result | None = os.lstat(self._index_path)
        except FileNotFoundError:
            index_st = None
        try:
            record_st = os.lstat(path)
        except FileNotFoundError:
            if index_st is not None:
                checked_stamp(self._index_path, index_st)  # an unsafe index is reported first
            raise
        index_stamp = None if index_st is None else stamp_of(index_st)
        stamps = (index_stamp, stamp_of(record_st))
        value: T | None = self._records.get(where, stamps, parse)
        if value is None:
            if index_st is not None:
                checked_stamp(self._index_path, index_st)
            checked_stamp(path, record_st)
            # the directories are checked when files are read from them (a kept record was)
            check_private(root, want_dir=True)
            check_private(directory, want_dir=True)
            read: list[Stamp] = []
            value = parse(self._read_record(section, name, Path(path), keys, read))
            # kept only if these very files were read (not others swapped in and back meanwhile)
            if read == ([stamps[1]] if index_stamp is None else [index_stamp, stamps[1], index_stamp]):
                self._records.put(where, stamps, parse, value)
        return value

    def _record_paths(self, where: tuple[str, str]) -> tuple[str, str, str]:
        """(vault directory, section directory, record file) as str, joined once per record."""
        root = self._root or self._set_root()
        directory = os.path.join(root, where[0])
        paths = (root, directory, os.path.join(directory, f"{where[1]}.json"))
        if len(self._paths) >= MAX_CACHED_RECORDS:
            self._paths.clear()
        self._paths[where] = paths
        return paths

    def _set_root(self) -> str:
        self._root = os.fspath(self.path)
        self._index_path = os.path.join(self._root, INDEX_FILE)
        return self._root

    def _read_record(self, section: str, name: str, path: Path, keys: MasterKeys,
                     seen: list[Stamp] | None = None) -> dict[str, Any]:
        """Lock-free: the index is read before and after the record; a write in between
        changes the index bytes (every write raises the generation), and the read is retried.
        ``seen`` gets the stamps of the files the accepted read read: index, record, index."""
        label = f"{SECTIONS[section]}:{name}"
        for _ in range(50):
            if seen is not None:
                seen.clear()
            before = self._read_index_raw(seen)
            record = read_json(path, seen)
            after = self._read_index_raw(seen)
            if before == after:
                break
        else:
            raise VaultError(f"the vault record for {label} kept changing while being read")
        if record.get("name") != name:  # e.g. keys/a.json copied over keys/b.json
            raise VaultError(f"the vault record for {label} names another {SECTIONS[section]}: "
                             "refusing to use it")
        if not mac_matches(record.get("mac"), keys.record_mac(label, record)):
            raise VaultError(f"the vault record for {label} failed authentication (edited or copied)")
        check_generation(section, name, label, record, parse_index(after, keys))
        return record

    def write_record(self, section: str, name: str, record: dict[str, Any] | None) -> int:
        """Store a record (or delete it: ``None``) at the next generation; the caller holds the
        vault lock.  The index first accepts the old and the new generation, then the record
        is written, then the index holds only the new one: a crash leaves a usable vault.
        Returns the generation (audit lines carry it)."""
        keys = self._derived()
        path = self.ensure_dir(section) / f"{name}.json"
        index = self._read_index(keys) or new_index()
        generation = int(index["generation"]) + 1
        old = index[section].get(name)
        index["generation"] = generation
        index[section][name] = [generation] if old is None else [max(allowed_generations(old) or {0}), generation]
        write_index(self.path, index, keys)
        self._records.drop((section, name))
        if record is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            record["generation"] = generation
            record["mac"] = keys.record_mac(f"{SECTIONS[section]}:{name}", record)
            write_json(path, record)
        index[section][name] = generation
        write_index(self.path, index, keys)
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
