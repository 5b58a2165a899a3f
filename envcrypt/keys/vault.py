"""The embedded local key vault behind ``local:`` key URIs.

A directory (mode 0700) holding one JSON file per key (mode 0600).  Key
material at rest is sealed with AES-256-GCM under the vault master key, which
by default is a random 32-byte file ``master.key`` (mode 0600) created on
first use.  Every update is atomic (temp file, fsync, rename) and serialised
across processes with an exclusive ``flock`` on ``.lock``.

Key URIs: ``local:NAME`` (newest enabled version) or ``local:NAME/VERSION``.
DEKs are wrapped with AES key wrap with padding (RFC 5649) under the key
version's 256-bit material; key slots name the exact version used.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from ..errors import EnvcryptError, KeyNotFoundError, WrongKeyError
from ..format import KeySlot
from .base import WRAP_AES256_KWP, split_key_uri

__all__ = ["LocalVault", "LocalVaultResolver", "default_vault_path"]

MASTER_KEY_FILE = "master.key"
KEYS_DIR = "keys"
LOCK_FILE = ".lock"
AUTO_CREATED_KEY = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class VaultError(EnvcryptError):
    """The vault directory is unsafe or unusable (permissions, symlinks, corruption)."""


def default_vault_path() -> Path:
    """``$ENVCRYPT_VAULT``, else ``$XDG_DATA_HOME/envcrypt/vault`` (``~/.local/share/...``)."""
    configured = os.environ.get("ENVCRYPT_VAULT")
    if configured:
        return Path(configured).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data_home) / "envcrypt" / "vault"


def parse_local_uri(key_uri: str) -> tuple[str, int | None]:
    """``local:NAME[/VERSION]`` -> ``(NAME, VERSION or None)``."""
    scheme, rest = split_key_uri(key_uri)
    if scheme != "local":
        raise ValueError(f"not a local: key URI: {key_uri!r}")
    name, sep, version = rest.partition("/")
    if not _NAME.match(name):
        raise ValueError(f"invalid local key name: {name!r}")
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"invalid local key version: {version!r}")
    return name, int(version)


def _check_private(path: Path, want_dir: bool) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise VaultError(f"refusing to use a symlink in the vault: {path}")
    if want_dir != stat.S_ISDIR(st.st_mode):
        raise VaultError(f"unexpected file type in the vault: {path}")
    if st.st_mode & 0o077:
        raise VaultError(f"insecure permissions on {path} (must not be group/other accessible)")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
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


class LocalVault:
    """A directory-backed key vault.  Holds the vault master key: never pickled, never shown."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_vault_path()
        self._master: AESGCM | None = None

    def __repr__(self) -> str:
        return f"LocalVault({str(self.path)!r})"

    def __reduce__(self) -> Any:
        # Only the path travels; the master key is read again where it is used.
        return (type(self), (str(self.path),))

    # ------------------------------------------------------------ layout

    def _ensure(self) -> None:
        if not self.path.exists():
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(self.path, want_dir=True)
        keys = self.path / KEYS_DIR
        if not keys.exists():
            keys.mkdir(mode=0o700, exist_ok=True)
        _check_private(keys, want_dir=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure()
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _master_key(self) -> AESGCM:
        if self._master is None:
            self._ensure()
            key_path = self.path / MASTER_KEY_FILE
            if not key_path.exists():
                with self._locked():
                    if not key_path.exists():
                        _atomic_write(key_path, os.urandom(32))
            _check_private(key_path, want_dir=False)
            raw = key_path.read_bytes()
            if len(raw) != 32:
                raise VaultError("the vault master key file is corrupt")
            self._master = AESGCM(raw)
        return self._master

    def _key_path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"invalid local key name: {name!r}")
        return self.path / KEYS_DIR / f"{name}.json"

    def _load(self, name: str) -> dict[str, Any]:
        path = self._key_path(name)
        try:
            _check_private(path, want_dir=False)
            record: dict[str, Any] = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise KeyNotFoundError(f"no key local:{name} in the vault") from None
        return record

    def _store(self, record: dict[str, Any]) -> None:
        data = json.dumps(record, indent=1, sort_keys=True).encode()
        _atomic_write(self._key_path(record["name"]), data)

    def _seal_material(self, name: str, version: int, material: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self._master_key().encrypt(nonce, material, f"local:{name}/{version}".encode())
        return base64.b64encode(nonce + sealed).decode()

    def _open_material(self, name: str, version: int, sealed_b64: str) -> bytes:
        sealed = base64.b64decode(sealed_b64)
        try:
            return self._master_key().decrypt(
                sealed[:12], sealed[12:], f"local:{name}/{version}".encode()
            )
        except Exception:
            raise VaultError(f"key material of local:{name}/{version} failed to open") from None

    # ------------------------------------------------------------ operations

    def create_key(self, name: str) -> str:
        """Create an AES-256 wrapping key; return its exact URI (``local:NAME/1``)."""
        self._master_key()
        with self._locked():
            if self._key_path(name).exists():
                raise ValueError(f"key local:{name} already exists")
            record = {"name": name, "kind": "aes256", "versions": []}
            uri = self._add_version(record, os.urandom(32))
            self._store(record)
        return uri

    def rotate_key(self, name: str) -> str:
        """Add a new version; new writes use it, older versions still unwrap."""
        self._master_key()
        with self._locked():
            record = self._load(name)
            uri = self._add_version(record, os.urandom(32))
            self._store(record)
        return uri

    def _add_version(self, record: dict[str, Any], material: bytes) -> str:
        version = len(record["versions"]) + 1
        record["versions"].append(
            {
                "version": version,
                "created": int(time.time()),
                "material": self._seal_material(record["name"], version, material),
            }
        )
        return f"local:{record['name']}/{version}"

    def key_exists(self, name: str) -> bool:
        return self._key_path(name).exists()

    def material(self, name: str, version: int | None) -> tuple[int, bytes]:
        """The (version, 32-byte material) of a key version; newest when ``version`` is None."""
        record = self._load(name)
        versions = record["versions"]
        if version is None:
            entry = versions[-1]
        else:
            matching = [v for v in versions if v["version"] == version]
            if not matching:
                raise KeyNotFoundError(f"no version {version} of local:{name}")
            entry = matching[0]
        return entry["version"], self._open_material(name, entry["version"], entry["material"])


class LocalVaultResolver:
    """``local:`` key URIs, resolved against a :class:`LocalVault`."""

    scheme: ClassVar[str] = "local"
    options: ClassVar[frozenset[str]] = frozenset({"vault"})

    def __init__(self, vault: str | os.PathLike[str] | LocalVault | None = None) -> None:
        self.vault = vault if isinstance(vault, LocalVault) else LocalVault(vault)

    def __repr__(self) -> str:
        return f"LocalVaultResolver({self.vault!r})"

    def _material(self, key_uri: str, create: bool) -> tuple[str, bytes]:
        name, version = parse_local_uri(key_uri)
        if create and version is None and name == AUTO_CREATED_KEY:
            with contextlib.suppress(ValueError):
                if not self.vault.key_exists(name):
                    self.vault.create_key(name)
        found, material = self.vault.material(name, version)
        return f"local:{name}/{found}", material

    def identity(self, key_uri: str) -> str:
        return self._material(key_uri, create=True)[0]

    def wrap(self, key_uri: str, dek: bytes, encryption_context: Mapping[str, str]) -> KeySlot:
        exact, material = self._material(key_uri, create=True)
        return KeySlot(exact, WRAP_AES256_KWP, aes_key_wrap_with_padding(material, dek))

    def unwrap(self, slot: KeySlot, encryption_context: Mapping[str, str]) -> bytes:
        if slot.wrap_algorithm != WRAP_AES256_KWP:
            raise WrongKeyError(f"local: keys cannot open wrap algorithm {slot.wrap_algorithm}")
        _, material = self._material(slot.key_uri, create=False)
        try:
            return aes_key_unwrap_with_padding(material, slot.wrapped_dek)
        except InvalidUnwrap:
            raise WrongKeyError(f"the key slot does not unwrap under {slot.key_uri}") from None
