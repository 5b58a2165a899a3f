"""``envcrypt mount``: atomicity when a writer or the mount is killed, background mode, read-only, key policy."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envcrypt.fs import EnvcryptFileSystem

from .fs_helpers import make_key
from .mount_helpers import Mount, env_for, envcrypt, force_unmount, is_mounted, needs_fuse

pytestmark = needs_fuse

OLD = b"the old contents\n" * 1000

WRITER = r"""
import sys, time
with open(sys.argv[1], sys.argv[2]) as f:
    f.write(b"N" * 1_000_000)
    f.flush()
    print("written", flush=True)
    time.sleep(60)
"""


def _store_fs(vault: Path) -> EnvcryptFileSystem:
    return EnvcryptFileSystem(resolver_options={"vault": str(vault)}, skip_instance_cache=True)


def _slot_keys(stored: Path) -> list[str]:
    """The key URIs named by the key slots of a stored object (its header, read without any key)."""
    from envcrypt.envelope import inspect

    return [slot["key_uri"] for slot in inspect(stored.read_bytes()).as_dict()["key_slots"]]


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting for a reaper has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _killed_writer(path: Path, mode: str) -> None:
    """A program that writes 1 MB to ``path`` and is killed with kill -9 before it closes it."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), mode], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"written\n"
        assert os.stat(path).st_size == 1_000_000  # the mount saw every byte
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)


def test_writer_killed_mid_file_leaves_the_old_file_or_nothing(tmp_path: Path, _isolated_vault: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    fs = _store_fs(_isolated_vault)
    fs.pipe_file(f"{store}/kept.txt", OLD)
    with Mount(str(store), tmp_path / "mnt", env_for(_isolated_vault)) as mount:
        _killed_writer(mount.path / "kept.txt", "wb")  # O_TRUNC over an existing file
        _killed_writer(mount.path / "fresh.txt", "wb")  # a new file
        _killed_writer(mount.path / "kept.txt", "r+b")  # in place, not truncated
        assert sorted(os.listdir(mount.path)) == ["kept.txt"]
        assert (mount.path / "kept.txt").read_bytes() == OLD
        # a writer that exits normally (its files closed by the kernel at exit) publishes
        subprocess.run([sys.executable, "-c", "import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT); "
                        "os.write(fd, b'done'); os._exit(0)", str(mount.path / "exited.txt")], check=True, timeout=20)
        assert (mount.path / "exited.txt").read_bytes() == b"done"
        assert "was killed" in mount.log_text()
    fs.invalidate_cache()
    assert fs.cat_file(f"{store}/kept.txt") == OLD
    assert sorted(os.listdir(store)) == ["exited.txt", "kept.txt"]  # no partial object, no temp object


def test_mount_killed_mid_write_leaves_the_old_file(tmp_path: Path, _isolated_vault: Path) -> None:
    store, spool = tmp_path / "store", tmp_path / "spool"
    store.mkdir()
    spool.mkdir()
    fs = _store_fs(_isolated_vault)
    fs.pipe_file(f"{store}/kept.txt", OLD)
    env = env_for(_isolated_vault)
    mount = Mount(str(store), tmp_path / "mnt", env, "--spool-dir", str(spool))
    with mount:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(mount.path / "kept.txt"), "wb"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"written\n"
            assert len(os.listdir(spool)) == 1  # the plaintext being written lives in the spool dir
            mount.kill()  # kill -9 of the mount process while the file is open for writing
        finally:
            proc.kill()
            proc.wait(timeout=20)
        fs.invalidate_cache()
        assert fs.cat_file(f"{store}/kept.txt") == OLD
        assert os.listdir(store) == ["kept.txt"]
    with Mount(str(store), tmp_path / "mnt", env) as again:
        assert (again.path / "kept.txt").read_bytes() == OLD


def test_background_read_only_and_unmount(tmp_path: Path, _isolated_vault: Path) -> None:
    store, mnt, pid_file = tmp_path / "store", tmp_path / "mnt", tmp_path / "mount.pid"
    store.mkdir()
    mnt.mkdir()
    fs = _store_fs(_isolated_vault)
    fs.pipe_file(f"{store}/report.csv", OLD)
    env = env_for(_isolated_vault)
    done = envcrypt("mount", str(store), str(mnt), "--background", "--read-only", "--pid-file", str(pid_file),
                    "--log", str(tmp_path / "mount.log"), env=env, timeout=60)
    pid = int(pid_file.read_text())
    try:
        assert b"mounted" in done.stdout and is_mounted(mnt)
        assert (mnt / "report.csv").read_bytes() == OLD
        assert os.stat(mnt / "report.csv").st_mode & 0o222 == 0
        for attempt in (lambda: (mnt / "new.txt").write_bytes(b"x"), lambda: (mnt / "report.csv").unlink(),
                        lambda: (mnt / "d").mkdir()):
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == errno.EROFS
        assert envcrypt("mount", str(store), str(mnt), env=env, check=False).returncode == 2  # already mounted
        envcrypt("unmount", str(mnt), "--pid-file", str(pid_file), env=env, timeout=60)
        assert not is_mounted(mnt) and not pid_file.exists()
        assert not _running(pid)
        assert envcrypt("unmount", str(mnt), env=env, check=False).returncode == 2  # not mounted: an error
    finally:
        force_unmount(mnt)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_rename_across_key_policy_prefixes_takes_the_destination_key(tmp_path: Path, _isolated_vault: Path) -> None:
    store = tmp_path / "store"
    (store / "a").mkdir(parents=True)
    (store / "b").mkdir()
    make_key("ka")
    make_key("kb")
    policy = {f"{store}/a/": "local:ka", f"{store}/b/": "local:kb"}
    options = json.dumps({"envcrypt": {"key_policy": policy}})
    env = env_for(_isolated_vault)
    with Mount(str(store), tmp_path / "mnt", env, "-o", options) as mount:
        (mount.path / "a" / "x.csv").write_bytes(OLD)
        assert _slot_keys(store / "a" / "x.csv") == ["local:ka/1"]
        os.rename(mount.path / "a" / "x.csv", mount.path / "b" / "x.csv")
        assert (mount.path / "b" / "x.csv").read_bytes() == OLD
        assert os.listdir(mount.path / "a") == []
    assert _slot_keys(store / "b" / "x.csv") == ["local:kb/1"]
    only_b = EnvcryptFileSystem(trusted_keys="local:kb", resolver_options={"vault": str(_isolated_vault)},
                                skip_instance_cache=True)
    assert only_b.cat_file(f"{store}/b/x.csv") == OLD


def test_unmount_waits_for_a_foreground_mount_to_publish(tmp_path: Path, _isolated_vault: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    env = env_for(_isolated_vault)
    mount = Mount(str(store), tmp_path / "mnt", env)
    with mount:
        (mount.path / "f.bin").write_bytes(b"z" * 3_000_000)
        start = time.monotonic()
    assert mount.proc is not None and mount.proc.returncode == 0  # ended by envcrypt unmount, cleanly
    assert time.monotonic() - start < 15
    assert _store_fs(_isolated_vault).cat_file(f"{store}/f.bin") == b"z" * 3_000_000


def test_mount_refuses_what_it_cannot_serve(tmp_path: Path, _isolated_vault: Path) -> None:
    env = env_for(_isolated_vault)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "file.txt").write_bytes(b"x")
    for url, mountpoint, message in (
        (str(tmp_path / "missing"), tmp_path / "mnt", b"no such directory"),
        (str(tmp_path), tmp_path / "no-mountpoint", b"must be an existing directory"),
    ):
        done = envcrypt("mount", url, str(mountpoint), env=env, check=False, timeout=30)
        assert done.returncode == 2 and message in done.stderr
    assert not is_mounted(tmp_path / "mnt")


def test_ctrl_c_unmounts_a_foreground_mount_cleanly(tmp_path: Path, _isolated_vault: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    mount = Mount(str(store), tmp_path / "mnt", env_for(_isolated_vault))
    with mount:
        (mount.path / "f.txt").write_bytes(b"written before Ctrl-C")
        assert mount.proc is not None
        mount.proc.send_signal(signal.SIGINT)
        assert mount.proc.wait(timeout=20) == 0
        assert not is_mounted(mount.path)
    assert _store_fs(_isolated_vault).cat_file(f"{store}/f.txt") == b"written before Ctrl-C"
