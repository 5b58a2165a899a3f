"""The vault directory: safe file handling and the vault master key.

Layout (directory 0700, every file 0600, no symlinks anywhere)::

    VAULT/
      vault.json     master key mode: {"master": "keyfile"} or the Argon2id parameters,
                     salt and the passphrase-sealed master key
      master.key     32 random bytes (key-file mode only), created on first use
      keys/NAME.json one record per key (key material sealed under the master key; the
                     whole record MACed under a key derived from it, bound to NAME)
      secrets/NAME.json
      audit.log      hash-chained JSON lines (see audit.py)
      .lock          flock for updates of keys and secrets; .audit.lock for the log

The master key seals key material with AES-256-GCM; the associated data names
what is sealed (``key:NAME/VERSION``, ``secret:NAME/VERSION``), so sealed
blobs cannot be swapped between records.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import VaultError

__all__ = ["VaultStore", "Argon2Params", "default_vault_path", "PASSPHRASE_ENV"]

PASSPHRASE_ENV = "ENVCRYPT_VAULT_PASSPHRASE"
CONFIG_FILE = "vault.json"
MASTER_KEY_FILE = "master.key"
LOCK_FILE = ".lock"
INIT_LOCK_FILE = ".init.lock"
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
    except json.JSONDecodeError:
        raise VaultError(f"corrupt vault file: {path.name}") from None
    if not isinstance(value, dict):
        raise VaultError(f"corrupt vault file: {path.name}")
    return value


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


class VaultStore:
    """The vault directory and its master key.  The master key never leaves this object:
    no repr, no pickling (only the path travels)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, passphrase: bytes | str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_vault_path()
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        self._passphrase = passphrase
        self._master: AESGCM | None = None
        self._audit_key: bytes | None = None
        self._record_key: bytes | None = None
        #: called once when this object creates the vault (the audit log writes its genesis line)
        self.init_hooks: list[Callable[[], None]] = []

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
        self.ensure_dir()
        with flocked(self.path / name):
            yield

    # ------------------------------------------------------------ master key

    def init(self, passphrase: bytes | str | None = None, params: Argon2Params | None = None) -> None:
        """Create the vault's master key: a key file, or one sealed under a passphrase."""
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        with self.locked(INIT_LOCK_FILE):
            if (self.path / CONFIG_FILE).exists():
                raise VaultError(f"the vault at {self.path} is already initialised")
            master = os.urandom(MASTER_KEY_SIZE)
            if passphrase is None:
                atomic_write(self.path / MASTER_KEY_FILE, master)
                write_json(self.path / CONFIG_FILE, {"format": 1, "master": "keyfile"})
            else:
                params = params or Argon2Params.from_config(ARGON2_DEFAULT)
                salt = os.urandom(SALT_SIZE)
                wrapping = AESGCM(params.derive(passphrase, salt))
                nonce = os.urandom(NONCE_SIZE)
                sealed = wrapping.encrypt(nonce, master, b"envcrypt vault master key")
                write_json(self.path / CONFIG_FILE, {
                    "format": 1, "master": "argon2id", "argon2id": params.as_dict(),
                    "salt": b64e(salt), "sealed_master": b64e(nonce + sealed),
                })
                self._passphrase = passphrase
            self._adopt(master)  # no second passphrase derivation for the first audit line
            for hook in self.init_hooks:
                hook()

    def _config(self) -> dict[str, Any]:
        path = self.path / CONFIG_FILE
        if not path.exists():
            if (self.path / MASTER_KEY_FILE).exists():  # a vault made before vault.json existed
                return {"format": 1, "master": "keyfile"}
            self.ensure_dir()
            with contextlib.suppress(VaultError):
                self.init()
        return read_json(path)

    def initialised(self) -> bool:
        """Whether the vault exists (has its config or master key file); creates nothing."""
        return (self.path / CONFIG_FILE).exists() or (self.path / MASTER_KEY_FILE).exists()

    def master_mode(self) -> str:
        mode = self._config().get("master")
        if mode not in ("keyfile", "argon2id"):
            raise VaultError(f"unknown vault master key mode {mode!r}")
        return str(mode)

    def _master_bytes(self) -> bytes:
        config = self._config()
        mode = config.get("master")
        if mode == "keyfile":
            raw = read_private(self.path / MASTER_KEY_FILE)
            if len(raw) != MASTER_KEY_SIZE:
                raise VaultError("the vault master key file is corrupt")
            return raw
        if mode == "argon2id":
            params = Argon2Params.from_config(config.get("argon2id"))  # refuses parameters above the cap
            passphrase = self._passphrase
            if passphrase is None:
                env = os.environ.get(PASSPHRASE_ENV)
                if not env:
                    raise VaultError(f"the vault is passphrase-protected: set ${PASSPHRASE_ENV}")
                passphrase = env.encode("utf-8")
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
        raise VaultError(f"unknown vault master key mode {mode!r}")

    def _adopt(self, raw: bytes) -> AESGCM:
        """Hold the master key (and the keys derived from it) for this object's lifetime."""
        self._master = AESGCM(raw)
        self._audit_key = HKDF(hashes.SHA256(), 32, None, b"envcrypt vault audit chain").derive(raw)
        self._record_key = HKDF(hashes.SHA256(), 32, None, b"envcrypt vault record mac").derive(raw)
        return self._master

    def _aead(self) -> AESGCM:
        if self._master is None:
            return self._adopt(self._master_bytes())
        return self._master

    def audit_key(self) -> bytes:
        self._aead()
        assert self._audit_key is not None
        return self._audit_key

    def record_mac(self, label: str, record: dict[str, Any]) -> str:
        """HMAC-SHA256 (key derived from the master key) of a record's canonical JSON without
        its ``mac`` field, bound to ``label``: state, versions and sealed material alike."""
        self._aead()
        assert self._record_key is not None
        body = {k: v for k, v in record.items() if k != "mac"}
        mac = crypto_hmac.HMAC(self._record_key, hashes.SHA256())
        mac.update(label.encode() + b"\0" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        return mac.finalize().hex()

    def check_record_mac(self, label: str, record: dict[str, Any]) -> None:
        """VaultError unless ``record["mac"]`` is :meth:`record_mac` of the record."""
        given = record.get("mac")
        if not isinstance(given, str) or not hmac.compare_digest(given, self.record_mac(label, record)):
            raise VaultError(f"the vault record for {label} failed authentication (edited or copied)")

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
