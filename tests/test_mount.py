"""``envcrypt mount`` with real programs: a local directory and a moto S3 prefix shown as plaintext.

Each program (cp, cat, sha256sum, grep, tar, Python's sqlite3 in its own process,
Python file I/O with seeks) works on the mount as on a disk; the store holds only
envcrypt objects, and decrypting them (``envcrypt cat``, ``fs.cat_file``) gives
exactly what the programs wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envcrypt.fs.urls import encrypted_fs

from .mount_helpers import Mount, env_for, envcrypt, needs_fuse, run

pytestmark = needs_fuse

TEXT = b"".join(b"%06d,customer-%d,4111111111111111,%s\n" % (i, i, b"x" * (i % 37)) for i in range(9000))


class Target:
    """A mounted store: the mount point, the envcrypt filesystem of the store and its root path."""

    def __init__(self, kind: str, mount: Mount, fs: Any, root: str, cli: list[str]) -> None:
        self.kind, self.mount, self.fs, self.root, self.cli = kind, mount, fs, root, cli
        self.mp = mount.path

    def _settled(self, read: Any, rel: str) -> bytes:
        # a file only created (``touch``, tar's empty members) is published when its last handle is
        # released, which the kernel sends asynchronously after close(): wait briefly for that
        deadline = time.monotonic() + 5
        while True:
            self.fs.invalidate_cache()
            try:
                return bytes(read(f"{self.root}/{rel}"))
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stored(self, rel: str) -> bytes:
        """The raw stored bytes (ciphertext) of ``rel``."""
        return self._settled(self.fs.target.cat_file, rel)

    def plaintext(self, rel: str) -> bytes:
        """``rel`` decrypted through the filesystem, not through the mount."""
        return self._settled(self.fs.cat_file, rel)


@pytest.fixture(scope="module", params=["local", "s3"])
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    base = tmp_path_factory.mktemp(f"mount-{request.param}")
    vault = base / "vault"
    cli: list[str] = ["--vault", str(vault)]
    if request.param == "local":
        store = base / "store"
        store.mkdir()
        url, options = str(store), {}
    else:
        endpoint = request.getfixturevalue("moto_server")
        import boto3

        bucket = f"mount-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        url = f"s3://{bucket}/data"
        options = {"s3": {"client_kwargs": {"endpoint_url": endpoint}}}
        cli += ["-o", json.dumps(options)]
    env = env_for(vault)  # after moto_server: its fake AWS credentials are in the environment
    fs, root = encrypted_fs(url, options, resolver_options={"vault": str(vault)}, skip_instance_cache=True)
    with Mount(url, base / "mnt", env, *cli) as mount:
        yield Target(request.param, mount, fs, root, [url, *cli])


def test_cp_cat_sha256sum_grep(target: Target, tmp_path: Path) -> None:
    src = tmp_path / "customers.csv"
    src.write_bytes(TEXT)
    (target.mp / "in").mkdir()
    run("cp", str(src), str(target.mp / "in" / "customers.csv"))
    on_mount = target.mp / "in" / "customers.csv"
    assert os.stat(on_mount).st_size == len(TEXT)  # the exact plaintext size
    assert run("cat", str(on_mount)) == TEXT
    digest = run("sha256sum", str(on_mount)).split()[0].decode()
    assert digest == hashlib.sha256(TEXT).hexdigest()
    assert run("grep", "-c", "customer-77", str(on_mount)) == b"%d\n" % TEXT.count(b"customer-77")
    stored = target.stored("in/customers.csv")
    assert stored.startswith(b"ENVCRYPT") and b"4111111111111111" not in stored and len(stored) > len(TEXT)
    assert target.plaintext("in/customers.csv") == TEXT
    env = target.mount.env
    url = target.cli[0].rstrip("/") + "/in/customers.csv"
    assert envcrypt("cat", url, *target.cli[1:], env=env).stdout == TEXT
    run("cp", str(on_mount), str(tmp_path / "back.csv"))
    assert (tmp_path / "back.csv").read_bytes() == TEXT


def test_tar_c_and_x(target: Target, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    rng = random.Random(7)
    files = {"a.txt": TEXT[:5000], "empty": b"", "sub/blob.bin": rng.randbytes(70_000),
             "sub/deeper/exact": rng.randbytes(16 * 1024 * 3)}
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    run("tar", "cf", str(target.mp / "tree.tar"), "-C", str(tmp_path), "tree")  # tar c onto the mount
    (target.mp / "out").mkdir()
    run("tar", "xf", str(target.mp / "tree.tar"), "-C", str(target.mp / "out"))  # tar x from and onto it
    for rel, data in files.items():
        assert (target.mp / "out" / "tree" / rel).read_bytes() == data
        assert target.plaintext(f"out/tree/{rel}") == data
        assert target.stored(f"out/tree/{rel}").startswith(b"ENVCRYPT")
    # tar c of the mounted tree reads back the same archive members
    listing = run("tar", "tvf", str(target.mp / "tree.tar")).decode()
    assert "tree/sub/blob.bin" in listing
    back = tmp_path / "back"
    back.mkdir()
    archive = run("tar", "cf", "-", "-C", str(target.mp / "out"), "tree")
    run("tar", "xf", "-", "-C", str(back), input=archive)
    for rel, data in files.items():
        assert (back / "tree" / rel).read_bytes() == data


SQLITE_SCRIPT = r"""
import sqlite3, sys
path = sys.argv[1]
con = sqlite3.connect(path)
con.execute("create table sales (id integer primary key, region text, amount real)")
for batch in range(4):
    with con:
        con.executemany("insert into sales (region, amount) values (?, ?)",
                        [(f"region-{i % 7}", i * 1.5) for i in range(batch * 2500, (batch + 1) * 2500)])
con.execute("create index by_region on sales(region)")
con.commit()
con.close()
con = sqlite3.connect(path)
print(con.execute("select count(*), round(sum(amount), 1) from sales where region = 'region-3'").fetchone())
with con:
    con.execute("update sales set amount = 0 where id % 2 = 0")
print(con.execute("select count(*), round(sum(amount), 1) from sales").fetchone())
"""


def test_sqlite_database_on_the_mount(target: Target, tmp_path: Path) -> None:
    db = target.mp / "shop.db"
    out = run(sys.executable, "-c", SQLITE_SCRIPT, str(db)).decode().split("\n")
    expected_region = (sum(1 for i in range(10_000) if i % 7 == 3),
                       round(sum(i * 1.5 for i in range(10_000) if i % 7 == 3), 1))
    expected_all = (10_000, round(sum(i * 1.5 for i in range(10_000) if (i + 1) % 2 == 1), 1))
    assert out[0] == str(expected_region) and out[1] == str(expected_all)
    # queried again by another process, and from the stored object decrypted outside the mount
    again = run(sys.executable, "-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("
                "'select count(*) from sales').fetchone()[0])", str(db))
    assert again.strip() == b"10000"
    assert target.stored("shop.db").startswith(b"ENVCRYPT")
    local = tmp_path / "copy.db"
    local.write_bytes(target.plaintext("shop.db"))
    import sqlite3

    con = sqlite3.connect(local)
    try:
        assert con.execute("select count(*), round(sum(amount), 1) from sales").fetchone() == expected_all
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        con.close()
    assert not any(n.endswith("-journal") for n in os.listdir(target.mp))


def test_python_open_with_seeks(target: Target) -> None:
    path = target.mp / "seek.bin"
    rng = random.Random(3)
    expected = bytearray(rng.randbytes(100_000))
    with open(path, "w+b") as f:
        f.write(expected)
        for offset in (0, 16383, 16384, 50_001, 99_990):  # random writes, across chunk boundaries
            patch = rng.randbytes(20)
            f.seek(offset)
            f.write(patch)
            expected[offset : offset + 20] = patch
        expected.extend(b"\0" * (120_000 - len(expected)))
        f.truncate(120_000)
        f.seek(16380)
        assert f.read(10) == expected[16380:16390]  # reads back what it wrote, before close
    assert path.read_bytes() == expected
    with open(path, "r+b") as f:  # an existing file updated in place (not truncated)
        f.seek(70_000)
        f.write(b"UPDATED")
        expected[70_000:70_007] = b"UPDATED"
    with open(path, "rb") as f:
        for offset, size in ((0, 1), (16_383, 2), (69_998, 12), (119_990, 100), (200_000, 5)):
            f.seek(offset)
            assert f.read(size) == expected[offset : offset + size]
        f.seek(-7, os.SEEK_END)
        assert f.read() == expected[-7:]
    assert target.plaintext("seek.bin") == expected
    with open(path, "ab") as f:  # append
        f.write(b"tail")
    assert path.read_bytes() == expected + b"tail"


def test_namespace_operations(target: Target) -> None:
    mp = target.mp
    (mp / "ns" / "inner").mkdir(parents=True)
    assert sorted(os.listdir(mp / "ns")) == ["inner"]
    (mp / "ns" / "inner" / "f.txt").write_bytes(b"hello mount")
    assert os.stat(mp / "ns" / "inner" / "f.txt").st_size == 11
    stored_before = target.stored("ns/inner/f.txt")
    os.rename(mp / "ns" / "inner" / "f.txt", mp / "ns" / "g.txt")
    assert sorted(os.listdir(mp / "ns")) == ["g.txt", "inner"]
    assert target.stored("ns/g.txt") == stored_before  # same key policy: the ciphertext itself moved
    (mp / "ns" / "h.txt").write_bytes(b"replaced")
    os.replace(mp / "ns" / "g.txt", mp / "ns" / "h.txt")  # rename over an existing file
    assert (mp / "ns" / "h.txt").read_bytes() == b"hello mount"
    os.truncate(mp / "ns" / "h.txt", 5)  # a file nobody has open
    assert (mp / "ns" / "h.txt").read_bytes() == b"hello" and target.plaintext("ns/h.txt") == b"hello"
    with pytest.raises(OSError) as info:
        os.rmdir(mp / "ns")
    assert info.value.errno == 39  # ENOTEMPTY
    os.rmdir(mp / "ns" / "inner")
    os.unlink(mp / "ns" / "h.txt")
    assert os.listdir(mp / "ns") == []
    with pytest.raises(FileNotFoundError):
        os.stat(mp / "ns" / "h.txt")
    os.rmdir(mp / "ns")
    assert not (mp / "ns").exists()
    st = os.statvfs(mp)
    assert st.f_bsize > 0 and st.f_namemax == 255
    (mp / "touched").touch()
    assert (mp / "touched").read_bytes() == b"" and target.plaintext("touched") == b""
    os.chmod(mp / "touched", 0o600)  # as the target allows: applied on a local disk, accepted on S3
    if target.kind == "local":
        assert os.stat(mp / "touched").st_mode & 0o777 == 0o600
