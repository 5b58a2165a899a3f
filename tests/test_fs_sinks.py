"""Publishing local files (envcrypt/fs/_sinks.py): modes follow the umask for new files and are
kept for replacements; a failed download leaves the existing file and no temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envcrypt.fs import EnvcryptFileSystem

from .fs_helpers import make_key, memory_envcrypt


def test_local_modes_new_files_follow_umask_replacements_keep_theirs(tmp_path: Path) -> None:
    from envcrypt.fs import trees

    make_key("next")
    fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
    old = os.umask(0o022)
    try:
        fs.pipe_file(str(tmp_path / "new"), b"x")
        assert os.stat(tmp_path / "new").st_mode & 0o777 == 0o644
        plain = tmp_path / "tree" / "plain.csv"
        plain.parent.mkdir()
        plain.write_bytes(b"a,b\n")
        os.chmod(plain, 0o640)
        assert trees.migrate(f"file://{plain.parent}", progress=False).done == [str(plain)]
        assert os.stat(plain).st_mode & 0o777 == 0o640
        os.chmod(plain, 0o604)
        assert trees.rewrap(f"file://{plain}", "local:next", progress=False).done == [str(plain)]
        assert os.stat(plain).st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


def test_failed_get_keeps_an_existing_local_file(tmp_path: Path) -> None:
    from envcrypt import IntegrityError

    fs, target = memory_envcrypt()
    fs.pipe_file("/g", os.urandom(300_000))
    stored = bytearray(target.cat_file("/g"))
    stored[len(stored) // 2] ^= 1
    target.pipe_file("/g", bytes(stored))
    tmp_path = tmp_path / "get"
    tmp_path.mkdir()
    out = tmp_path / "out.bin"
    out.write_bytes(b"precious")
    with pytest.raises(IntegrityError):
        fs.get_file("/g", str(out))
    assert out.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.bin"]  # no temp file left
    fs.pipe_file("/g", b"fresh")
    fs.get_file("/g", str(out))
    assert out.read_bytes() == b"fresh"
