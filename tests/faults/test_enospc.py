"""A full disk: a small real tmpfs (mounted when the machine allows it) and, always, a
size-limited filesystem for targets published through ``put_file``.  The write fails with
``OSError(ENOSPC)``, the object that was there stays whole, and nothing half-written or
temporary is left (the space is given back)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec import AbstractFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._sinks import TEMP_PREFIX
from envcrypt.keys.vault import LocalVault

pytestmark = pytest.mark.timeout(60)

SIZE = 2 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
                          capture_output=True, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"tmpfs mount not permitted here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_full_local_disk(small_disk: Path) -> None:
    LocalVault().create_key("k")
    fs = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri="local:k", skip_instance_cache=True)
    target = small_disk / "obj.bin"
    old = os.urandom(400 * 1024)
    fs.pipe_file(str(target), old)
    (small_disk / "filler").write_bytes(b"\0" * (_free(small_disk) - 300 * 1024))
    free_before = _free(small_disk)
    for attempt in ("with", "pipe"):
        with pytest.raises(OSError) as info:
            if attempt == "with":
                with fs.open(str(target), "wb") as f:
                    for _ in range(16):
                        f.write(os.urandom(64 * 1024))
            else:
                fs.pipe_file(str(target), os.urandom(SIZE))
        assert info.value.errno == errno.ENOSPC
        assert fs.cat_file(str(target)) == old  # the old object, whole
        assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "obj.bin"]  # no temp file
        assert _free(small_disk) == free_before  # and its space given back
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import pandas as pd

    frame = pd.DataFrame({"a": [os.urandom(200).hex() for _ in range(4000)]})
    so = {"envcrypt": {"key_uri": "local:k"}}
    with pytest.raises(OSError) as info:
        frame.to_parquet(f"envcrypt::file://{small_disk}/t.parquet", storage_options=so, compression=None)
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "obj.bin"]


class LimitedFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """A quota-limited store (a real in-memory store inside) that refuses uploads past
    ``capacity`` bytes with ENOSPC, as a full remote store answers; it publishes through
    ``put_file``, as any target envcrypt has no atomic sink of its own for."""

    protocol = ("limited",)

    def __init__(self, capacity: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = MemoryFileSystem(skip_instance_cache=True)
        self.inner.store, self.inner.pseudo_dirs = {}, [""]
        self.capacity = capacity

    def used(self) -> int:
        return sum(f.size for f in self.inner.store.values())

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        return self.inner.ls(path, detail=detail, **kwargs)

    def info(self, path: str, **kwargs: Any) -> Any:
        return self.inner.info(path, **kwargs)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            raise NotImplementedError("uploads only")
        return self.inner.open(path, "rb")

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> Any:
        return self.inner.cat_file(path, start=start, end=end)

    def rm_file(self, path: str) -> None:
        self.inner.rm_file(path)

    def put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
        rpath = self._strip_protocol(rpath)
        size, old = os.path.getsize(lpath), self.inner.store.get(rpath)
        if self.used() - (old.size if old is not None else 0) + size > self.capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), rpath)
        self.inner.put_file(lpath, rpath, **kwargs)


def test_a_full_remote_store() -> None:
    LocalVault().create_key("k")
    limited = LimitedFileSystem(capacity=300_000, skip_instance_cache=True)
    fs = EnvcryptFileSystem(fs=limited, key_uri="local:k", skip_instance_cache=True)
    old = os.urandom(100_000)
    fs.pipe_file("/q/obj.bin", old)
    temps_before = {p for p in os.listdir(os.environ.get("TMPDIR", "/tmp")) if p.startswith(TEMP_PREFIX)}
    with pytest.raises(OSError) as info:
        with fs.open("/q/obj.bin", "wb") as f:
            f.write(os.urandom(400_000))
    assert info.value.errno == errno.ENOSPC
    assert fs.cat_file("/q/obj.bin") == old
    assert list(limited.inner.store) == ["/q/obj.bin"]
    temps_after = {p for p in os.listdir(os.environ.get("TMPDIR", "/tmp")) if p.startswith(TEMP_PREFIX)}
    assert temps_after <= temps_before  # the local spool of the upload was removed
