"""``EnvcryptOperations`` called as the kernel calls it (no FUSE needed): the open-file state machine."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from envcrypt.fs import EnvcryptFileSystem
from envcrypt.mount import EnvcryptOperations


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


def _ops(store: Path, spool: Path | None = None, **kwargs: bool) -> tuple[EnvcryptOperations, EnvcryptFileSystem]:
    fs = EnvcryptFileSystem(skip_instance_cache=True)
    return EnvcryptOperations(fs, str(store), spool_dir=str(spool) if spool else None, **kwargs), fs


def _errno_of(call: object) -> int:
    with pytest.raises(OSError) as info:
        call()  # type: ignore[operator]
    return int(info.value.errno or 0)


def test_create_write_flush_publishes_and_readers_see_the_spool(store: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    ops, fs = _ops(store, spool)
    fh = ops.create("/a.txt", 0o644, os.O_WRONLY)
    assert [name for name in ops.readdir("/", 0) if isinstance(name, tuple)] == [("a.txt", {"st_mode": 0o100000}, 0)]
    assert ops.write("/a.txt", b"hello", 0, fh) == 5
    reader = ops.open("/a.txt", os.O_RDONLY)  # opened while being written: reads the spool
    assert ops.read("/a.txt", 100, 0, reader) == b"hello"
    assert ops.getattr("/a.txt")["st_size"] == 5 and not (store / "a.txt").exists()  # not published yet
    private = next(spool.iterdir())
    assert os.stat(private).st_mode & 0o777 == 0o700
    named = list(private.iterdir())  # an O_TMPFILE has no name; elsewhere one 0600 file
    assert named == [] or [os.stat(p).st_mode & 0o777 for p in named] == [0o600]
    ops.flush("/a.txt", fh)  # close() of a handle that wrote: published now
    assert fs.cat_file(f"{store}/a.txt") == b"hello"
    ops.write("/a.txt", b"J", 0, fh)
    ops.fsync("/a.txt", 0, fh)
    assert fs.cat_file(f"{store}/a.txt") == b"Jello"
    ops.release("/a.txt", fh)
    assert ops.read("/a.txt", 100, 0, reader) == b"Jello"  # the reader reads the published object now
    ops.release("/a.txt", reader)
    assert list(spool.iterdir()) == []  # the spool is gone with the last handle


def test_unlink_while_open_publishes_nothing_more(store: Path) -> None:
    ops, fs = _ops(store)
    fh = ops.create("/gone.txt", 0o644, os.O_WRONLY)
    ops.write("/gone.txt", b"data", 0, fh)
    ops.unlink("/gone.txt")  # never published: nothing to delete, no error
    ops.write("/gone.txt", b"more", 4, fh)
    ops.flush("/gone.txt", fh)
    ops.release("/gone.txt", fh)
    assert not (store / "gone.txt").exists()
    assert _errno_of(lambda: ops.getattr("/gone.txt")) == errno.ENOENT


def test_truncate_with_a_reader_open_publishes_at_once(store: Path) -> None:
    ops, fs = _ops(store)
    fs.pipe_file(f"{store}/t.bin", b"0123456789")
    reader = ops.open("/t.bin", os.O_RDONLY)
    ops.truncate("/t.bin", 4)
    assert fs.cat_file(f"{store}/t.bin") == b"0123"
    assert ops.read("/t.bin", 100, 0, reader) == b"0123"
    ops.release("/t.bin", reader)


def test_open_without_truncate_starts_from_the_old_plaintext(store: Path) -> None:
    ops, fs = _ops(store)
    fs.pipe_file(f"{store}/u.bin", b"abcdef")
    fh = ops.open("/u.bin", os.O_RDWR)
    ops.write("/u.bin", b"XY", 2, fh)
    assert ops.read("/u.bin", 100, 0, fh) == b"abXYef"
    ops.release("/u.bin", fh)  # the last handle publishes what is pending
    assert fs.cat_file(f"{store}/u.bin") == b"abXYef"
    fh = ops.open("/u.bin", os.O_WRONLY | os.O_TRUNC)
    ops.release("/u.bin", fh)
    assert fs.cat_file(f"{store}/u.bin") == b""


def test_rename_of_a_file_being_written_moves_what_was_written(store: Path) -> None:
    ops, fs = _ops(store)
    fh = ops.create("/draft", 0o644, os.O_WRONLY)
    ops.write("/draft", b"v1", 0, fh)
    ops.rename("/draft", "/final")
    ops.write("/final", b"v2", 0, fh)
    ops.release("/final", fh)
    assert fs.cat_file(f"{store}/final") == b"v2" and not (store / "draft").exists()


def test_read_only_refuses_every_change(store: Path) -> None:
    ops, fs = _ops(store, read_only=True)
    fs.pipe_file(f"{store}/r.txt", b"read me")
    for call in (lambda: ops.create("/n", 0o644, os.O_WRONLY), lambda: ops.open("/r.txt", os.O_RDWR),
                 lambda: ops.truncate("/r.txt", 0), lambda: ops.unlink("/r.txt"), lambda: ops.mkdir("/d", 0o755),
                 lambda: ops.rename("/r.txt", "/s.txt"), lambda: ops.chmod("/r.txt", 0o600)):
        assert _errno_of(call) == errno.EROFS
    fh = ops.open("/r.txt", os.O_RDONLY)
    assert ops.read("/r.txt", 4, 5, fh) == b"me"
    assert ops.getattr("/r.txt")["st_mode"] & 0o222 == 0
    ops.release("/r.txt", fh)


def test_destroy_publishes_nothing_of_files_still_open(store: Path) -> None:
    ops, fs = _ops(store)
    fs.pipe_file(f"{store}/kept", b"old")
    fh = ops.open("/kept", os.O_WRONLY | os.O_TRUNC)
    ops.write("/kept", b"half", 0, fh)
    ops.destroy("/")
    assert fs.cat_file(f"{store}/kept") == b"old"


def test_read_write_open_that_only_reads_spools_and_publishes_nothing(store: Path, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    ops, fs = _ops(store, spool)
    fs.pipe_file(f"{store}/db", b"pages" * 1000)
    before = (store / "db").read_bytes()
    fh = ops.open("/db", os.O_RDWR)
    assert ops.read("/db", 5, 4995, fh) == b"pages"
    assert list(spool.iterdir()) == []  # nothing copied for a session that only reads
    ops.flush("/db", fh)
    ops.fsync("/db", 0, fh)
    ops.release("/db", fh)
    assert (store / "db").read_bytes() == before  # not republished
    fh = ops.open("/db", os.O_RDWR)
    ops.truncate("/db", 5)  # a change (ftruncate on the open file): spooled, published on release
    assert len(list(spool.iterdir())) == 1 and (store / "db").read_bytes() == before
    ops.release("/db", fh)
    assert fs.cat_file(f"{store}/db") == b"pages"
