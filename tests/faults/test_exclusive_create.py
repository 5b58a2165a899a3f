"""Create-only writes racing on local disk and in memory: for every path exactly one of the
writers wins and the object is the winner's, whole; every other writer gets
``ObjectExistsError`` (a ``FileExistsError``).  ``pipe_file(mode="create")``,
``open(p, "xb")`` and ``open(p, "wb", overwrite=False)`` are the same exclusive create
(S3: tests/faults/test_s3_faults.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from envcrypt.errors import ObjectExistsError
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.keys.vault import LocalVault

pytestmark = pytest.mark.timeout(60)
WRITERS, PATHS = 8, 25


@pytest.mark.parametrize("target", ["file", "memory"])
def test_racing_exclusive_creates(tmp_path: Path, target: str) -> None:
    LocalVault().create_key("k")
    if target == "memory":
        inner = MemoryFileSystem(skip_instance_cache=True)
        inner.store, inner.pseudo_dirs = {}, [""]
    else:
        inner = fsspec.filesystem("file")
    fs = EnvcryptFileSystem(fs=inner, key_uri="local:k", skip_instance_cache=True)
    root = str(tmp_path / "lake")
    inner.makedirs(root, exist_ok=True)
    start = threading.Barrier(WRITERS)
    wins: dict[str, list[int]] = {f"{root}/o{i}": [] for i in range(PATHS)}
    errors: list[str] = []

    def writer(w: int) -> None:
        start.wait(timeout=30)
        for n, path in enumerate(wins):
            body = f"writer {w} ".encode() * (1000 + w)
            try:
                if (n + w) % 3 == 0:
                    fs.pipe_file(path, body, mode="create")
                elif (n + w) % 3 == 1:
                    with fs.open(path, "xb") as f:
                        f.write(body)
                else:
                    with fs.open(path, "wb", overwrite=False) as f:
                        f.write(body)
                wins[path].append(w)
            except ObjectExistsError:
                pass
            except Exception as exc:  # anything else fails the test
                errors.append(f"{path}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    for path, winners in wins.items():
        assert len(winners) == 1, (path, winners)
        assert fs.cat_file(path) == f"writer {winners[0]} ".encode() * (1000 + winners[0])
    assert sorted(fs.ls(root, detail=False)) == sorted(wins)  # no temp files, nothing else
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{root}/o0", b"late", mode="create")
