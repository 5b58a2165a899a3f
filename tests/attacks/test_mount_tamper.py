"""Attacks on a mounted store by someone who can write the storage but holds no master key.

The mount never serves a byte that did not authenticate: a flipped ciphertext
byte is EIO for the read that touches it and for every later read of that open
file (even of untouched chunks); a planted plaintext file or a truncated object
is EIO, never its raw bytes; an object sealed under a key the mount does not
trust is EACCES.  The envcrypt error is named in the mount's log.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from envcrypt.format import BODY_PREFIX_SIZE, CHUNK_SIZE, SEALED_CHUNK_SIZE
from envcrypt.fs import EnvcryptFileSystem

from ..fs_helpers import make_key
from ..mount_helpers import Mount, env_for, needs_fuse

pytestmark = needs_fuse

SIZE = 3 * 1024 * 1024
DATA = bytes(range(256)) * (SIZE // 256)


def _fs(vault: Path, **options: object) -> EnvcryptFileSystem:
    return EnvcryptFileSystem(resolver_options={"vault": str(vault)}, skip_instance_cache=True, **options)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 1]))


def _stored_offset(fs: EnvcryptFileSystem, path: str, chunk: int) -> int:
    """The stored offset of a byte inside sealed chunk ``chunk`` of ``path``."""
    return int(fs.info(path)["header_size"]) + BODY_PREFIX_SIZE + chunk * SEALED_CHUNK_SIZE + 100


def _eio(read: object) -> None:
    with pytest.raises(OSError) as info:
        read()  # type: ignore[operator]
    assert info.value.errno == errno.EIO


def test_tampered_chunk_is_eio_and_the_open_file_stays_failed(tmp_path: Path, _isolated_vault: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    fs = _fs(_isolated_vault)
    fs.pipe_file(f"{store}/big.bin", DATA)
    bad_chunk = (3 * 1024 * 1024 // 2) // CHUNK_SIZE
    with Mount(str(store), tmp_path / "mnt", env_for(_isolated_vault)) as mount:
        on_mount = mount.path / "big.bin"
        fd = os.open(on_mount, os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 0) == DATA[:4096]
            _flip(store / "big.bin", _stored_offset(fs, f"{store}/big.bin", bad_chunk))
            _eio(lambda: os.pread(fd, 4096, bad_chunk * CHUNK_SIZE))
            _eio(lambda: os.pread(fd, 4096, SIZE - 300_000))  # untouched chunk, same open file: still EIO
        finally:
            os.close(fd)
        # a program reading the whole file gets an error and only bytes before the bad chunk
        done = subprocess.run(["cat", str(on_mount)], capture_output=True, timeout=60, check=False)
        assert done.returncode != 0 and b"Input/output error" in done.stderr
        assert len(done.stdout) <= bad_chunk * CHUNK_SIZE and DATA.startswith(done.stdout)
        done = subprocess.run(["sha256sum", str(on_mount)], capture_output=True, timeout=60, check=False)
        assert done.returncode != 0
        assert "IntegrityError" in mount.log_text()


def test_truncated_object_is_eio(tmp_path: Path, _isolated_vault: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    fs = _fs(_isolated_vault)
    fs.pipe_file(f"{store}/t.bin", DATA[: 5 * CHUNK_SIZE + 10])
    raw = (store / "t.bin").read_bytes()
    (store / "t.bin").write_bytes(raw[: len(raw) - (10 + 16)])  # cut at a chunk boundary: a shorter "file"
    with Mount(str(store), tmp_path / "mnt", env_for(_isolated_vault)) as mount:
        _eio(lambda: (mount.path / "t.bin").read_bytes())


def test_planted_plaintext_is_never_served(tmp_path: Path, _isolated_vault: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "planted.csv").write_bytes(b"id,amount\n1,1000000\n")
    (store / "fake.bin").write_bytes(b"ENVCRYPT" + b"\xff" * 40)  # the magic, then garbage
    with Mount(str(store), tmp_path / "mnt", env_for(_isolated_vault)) as mount:
        _eio(lambda: (mount.path / "planted.csv").read_bytes())
        _eio(lambda: (mount.path / "fake.bin").read_bytes())
        assert "NotEncryptedError" in mount.log_text()


def test_object_under_an_untrusted_key_is_eacces(tmp_path: Path, _isolated_vault: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    make_key("attacker")
    _fs(_isolated_vault, key_uri="local:attacker").pipe_file(f"{store}/swapped.csv", b"forged report\n")
    env = env_for(_isolated_vault)
    with Mount(str(store), tmp_path / "mnt", env) as mount:
        assert os.stat(mount.path / "swapped.csv").st_size == 14  # listed, with its size
        with pytest.raises(PermissionError):
            (mount.path / "swapped.csv").read_bytes()
        assert "UntrustedKeyError" in mount.log_text()
    with Mount(str(store), tmp_path / "mnt", env, "--trusted-key", "local:attacker") as mount:
        assert (mount.path / "swapped.csv").read_bytes() == b"forged report\n"  # only when trusted on purpose
