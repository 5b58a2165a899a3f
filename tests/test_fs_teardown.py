"""Interpreter exit after pyarrow read through envcrypt: no abort at teardown.

pyarrow reads an fsspec filesystem through ``PyFileSystem`` on its own I/O
threads and lets go of the files (and of its handler) there, after the scan
has returned.  A file kept alive by a reference cycle, or released while the
interpreter finalizes, made ~3-27% of fresh processes abort with ``terminate
called without an active exception`` (exit 134).  envcrypt's read files are
freed by reference counting, and the first file used from another thread
registers an exit hook that waits until such files are released.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from envcrypt.fs import EnvcryptFileSystem

pd = pytest.importorskip("pandas")
ds = pytest.importorskip("pyarrow.dataset")


def _write_dataset(root: Path, parts: int = 4, rows: int = 50_000) -> EnvcryptFileSystem:
    import numpy as np

    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    for i in range(parts):
        frame = pd.DataFrame({"k": np.arange(rows) % 7, "v": np.random.default_rng(i).random(rows)})
        with fs.open(f"{root}/ds/part={i}/f.parquet", "wb") as f:
            frame.to_parquet(f)
    return fs


def test_a_dropped_read_file_is_freed_at_once_not_by_a_later_collection(tmp_path: Path) -> None:
    fs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    fs.pipe_file(f"{tmp_path}/a.bin", b"x" * 100_000)
    gc.disable()
    try:
        f = fs.open(f"{tmp_path}/a.bin", "rb")
        assert f.read(10) == b"x" * 10
        ref = weakref.ref(f)
        del f
        assert ref() is None  # no reference cycle keeps it (and its descriptor) alive
    finally:
        gc.enable()


def test_files_pyarrow_reads_on_its_threads_are_released_before_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    from envcrypt.fs import _files

    # count only this test's files: a file of an earlier test still alive (in a cycle, with the
    # collector disabled below) would keep the process-wide registry from ever draining
    thread_used = _files._ThreadUsedFiles()
    monkeypatch.setattr(_files, "THREAD_USED", thread_used)
    fs = _write_dataset(tmp_path)
    gc.disable()  # released by reference counting, on pyarrow's threads
    try:
        table = ds.dataset(f"{tmp_path}/ds", filesystem=fs, partitioning="hive").to_table()
        assert table.num_rows == 200_000
        assert thread_used.wait(timeout=5.0)
        assert thread_used.pending() == 0
    finally:
        gc.enable()
    # a file read from another thread and still held is waited for, and only until the timeout
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(lambda: fs.open(f"{tmp_path}/ds/part=0/f.parquet", "rb")).result()
    assert thread_used.pending() == 1 and thread_used.wait(timeout=0.05) is False
    held.close()
    del held
    assert thread_used.wait(timeout=1.0)


_SCRIPT = textwrap.dedent("""
    import sys
    import pyarrow.dataset as ds
    from envcrypt.fs import EnvcryptFileSystem

    fs = EnvcryptFileSystem(target_protocol="file")
    table = ds.dataset(sys.argv[1], filesystem=fs, partitioning="hive").to_table()
    assert table.num_rows == 200_000, table.num_rows
""")


@pytest.mark.slow
def test_a_plain_script_reading_a_dataset_exits_cleanly_every_time(tmp_path: Path) -> None:
    _write_dataset(tmp_path)
    script = tmp_path / "read.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ)

    def run(_: int) -> tuple[int, str]:
        done = subprocess.run([sys.executable, str(script), f"{tmp_path}/ds"], env=env, capture_output=True,
                              text=True, timeout=120)
        return done.returncode, done.stderr[-500:]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, range(60)))
    failed = [(code, err) for code, err in results if code != 0]
    assert failed == [], f"{len(failed)} of 60 runs failed, e.g. {failed[0]}"
