"""The CLI's start-up path: ``envcrypt encrypt``/``decrypt`` import only what they use,
the command -> group table matches the groups, and the buffered copy is exact at every size."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import envcrypt
from envcrypt import cli
from envcrypt.cli import core

#: what a local-file encrypt or decrypt must never load (each costs tens of ms or more)
HEAVY = ("fsspec", "numpy", "pandas", "pyarrow", "boto3", "botocore", "dask", "tqdm", "asyncio")

#: runs the real ``python -m envcrypt`` in-process and prints its loaded modules at exit (an
#: atexit callback: the program may leave by its quick exit, which runs those, or normally)
_PROBE = """
import atexit, json, runpy, sys
atexit.register(lambda: print(json.dumps({"modules": sorted(sys.modules)}), flush=True))
sys.argv = ["envcrypt", *sys.argv[1:]]
runpy.run_module("envcrypt", run_name="__main__", alter_sys=True)
"""

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> tuple[int, set[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env,
                          timeout=60)
    result = json.loads(proc.stdout.splitlines()[-1])
    return proc.returncode, set(result["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_local_encrypt_and_decrypt_load_no_heavy_module(tmp_path: Path) -> None:
    src, enc, back = tmp_path / "a.bin", tmp_path / "a.envc", tmp_path / "back.bin"
    src.write_bytes(os.urandom(100_000))
    code, modules = _run("encrypt", str(src), str(enc), "--context", "k=v")
    assert code == 0 and enc.exists()
    assert _heavy(modules) == []
    assert not any(m.startswith(("envcrypt.fs", "envcrypt.cli.keys", "envcrypt.cli.fs", "envcrypt.parquet",
                                 "envcrypt.columns")) for m in modules)
    code, modules = _run("decrypt", str(enc), str(back), "--context", "k=v")
    assert code == 0 and back.read_bytes() == src.read_bytes()
    assert _heavy(modules) == []


def test_the_probe_sees_heavy_imports() -> None:
    """The probe above is not blind: a command that needs fsspec shows it."""
    code, modules = _run("ls", str(REPO / "tests"))
    assert code == 0
    assert "fsspec" in modules


def _registered(group: str) -> set[str]:
    parser = argparse.ArgumentParser()
    importlib.import_module(group).register(parser.add_subparsers())
    return {name for action in parser._subparsers._group_actions  # type: ignore[union-attr]
            for name in (action.choices or {})}


def test_command_table_matches_the_groups() -> None:
    from_groups = {command: group for group in cli.GROUPS for command in _registered(group)}
    assert cli.COMMAND_GROUPS == from_groups


@pytest.mark.parametrize("argv, expected", [
    (["encrypt", "a", "b"], ("envcrypt.cli.core",)),
    (["--debug", "decrypt", "a", "b"], ("envcrypt.cli.core",)),
    (["key", "list"], ("envcrypt.cli.keys",)),
    (["cat", "x"], ("envcrypt.cli.fs",)),
    (["-h"], None),
    (["--version"], None),
    (["no-such-command"], None),
    ([], None),
])
def test_one_group_per_known_command(argv: list[str], expected: tuple[str, ...] | None) -> None:
    assert cli._groups_for(argv) == expected


def test_unknown_command_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    err = capsys.readouterr().err
    for command in ("encrypt", "key", "cat", "parquet"):
        assert command in err


def test_version_is_printed_on_demand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("envcrypt ")


@pytest.mark.parametrize("size", [0, 1, envcrypt.CHUNK_SIZE - 1, envcrypt.CHUNK_SIZE, core.COPY_BUFFER,
                                  core.COPY_BUFFER + envcrypt.CHUNK_SIZE + 1])
def test_buffered_copy_is_exact_at_boundaries(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src, enc, back = tmp_path / "in", tmp_path / "in.envc", tmp_path / "out"
    src.write_bytes(data)
    assert cli.main(["encrypt", str(src), str(enc)]) == 0
    assert envcrypt.decrypt(enc.read_bytes()) == data
    assert cli.main(["decrypt", str(enc), str(back)]) == 0
    assert back.read_bytes() == data


def test_copy_buffer_follows_a_small_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    with open(path, "rb", buffering=0) as f:
        assert core._copy_size(f) == envcrypt.CHUNK_SIZE
    path.write_bytes(b"x" * (envcrypt.CHUNK_SIZE * 3))
    with open(path, "rb", buffering=0) as f:
        assert core._copy_size(f) == envcrypt.CHUNK_SIZE * 4  # room to see the end in one read
    path.write_bytes(b"x" * (core.COPY_BUFFER * 2))
    with open(path, "rb", buffering=0) as f:
        assert core._copy_size(f) == core.COPY_BUFFER
    read_end, write_end = os.pipe()
    with open(read_end, "rb", buffering=0) as f, open(write_end, "wb"):
        assert core._copy_size(f) == core.COPY_BUFFER  # a pipe's size says nothing


def test_encrypt_from_a_pipe_in_short_reads(tmp_path: Path) -> None:
    """stdin delivers short reads; the writer must stage them into whole chunks."""
    data = os.urandom(core.COPY_BUFFER + 12345)
    enc = tmp_path / "p.envc"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "envcrypt", "encrypt", "-", str(enc)], stdin=subprocess.PIPE,
                            env=env)
    assert proc.stdin is not None
    for off in range(0, len(data), 70_001):  # odd-sized pieces through the pipe
        proc.stdin.write(data[off:off + 70_001])
        proc.stdin.flush()
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert envcrypt.decrypt(enc.read_bytes()) == data
