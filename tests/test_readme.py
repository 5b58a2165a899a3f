"""The README's examples run as written, in order, on a fresh vault: they cannot drift again.

Every ```python block is executed and every ```sh line that starts with ``envcrypt`` goes
through the real CLI (``envcrypt.cli.main``), in a fresh working directory with a fresh
vault.  Placeholders are substituted, and only these:

- ``s3://lake`` in shell lines becomes a local ``file://`` lake in the working directory (the
  commands are the same for any fsspec URL); in Python blocks the bucket is a real (moto) S3
  bucket and ``"endpoint_url": "..."`` its endpoint.
- the inputs the examples start from (``raw/``, ``data.csv``, plaintext under ``lake/legacy``)
  are created first.

A line that cannot run here is listed in ``NOT_RUN`` (a Python block in ``NOT_RUN_PYTHON``)
with the reason; any other line that is not an ``envcrypt`` command fails the test.
"""

from __future__ import annotations

import io
import re
import shlex
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from envcrypt.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"

#: shell lines the test does not run, with the reason
NOT_RUN = {
    "./dev demo": "the demo writes 200,000 rows with the user's default vault; `envcrypt demo` is tested in test_cli_core",
    "./dev test": "the test suite itself",
    ".venv/bin/python benchmarks/bench_core.py": "a benchmark: minutes of measurement",
    ".venv/bin/python benchmarks/bench_keys.py": "a benchmark: minutes of measurement",
    ".venv/bin/python benchmarks/bench_fs.py": "a benchmark: minutes of measurement",
    ".venv/bin/python benchmarks/bench_parquet.py": "a benchmark: minutes of measurement",
    ".venv/bin/python benchmarks/bench_columns.py": "a benchmark: minutes of measurement",
    ".venv/bin/python benchmarks/bench_mount.py": "a benchmark: minutes of measurement",
    ".venv/bin/python benchmarks/bench_azure_kv.py": "a benchmark: minutes of measurement",
    ".venv/bin/python benchmarks/bench_peers.py": "a benchmark: minutes of measurement (peers in the bench extra)",
    ".venv/bin/python benchmarks/bench_small_reads.py": "a benchmark: minutes of measurement",
    ".venv/bin/python benchmarks/bench_listing.py": "a benchmark: minutes of measurement",
}

#: python blocks the test does not run (keyed by their first line), with the reason
NOT_RUN_PYTHON: dict[str, str] = {}

#: what commands that read stdin get
STDIN = {"secret set": b"example-password"}

_BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    found = [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text(encoding="utf-8"))]
    assert found, "no code blocks found in README.md"
    return found


def _inputs(cwd: Path) -> None:
    """The files the examples start from."""
    (cwd / "raw" / "2026").mkdir(parents=True)
    for i in range(3):
        (cwd / "raw" / "2026" / f"part-{i}.csv").write_bytes(b"id,amount\n" + b"%d,%d.50\n" % (i, i * 10))
    (cwd / "lake" / "legacy").mkdir(parents=True)
    (cwd / "lake" / "legacy" / "old.csv").write_bytes(b"id,card\n1,4111111111111111\n")
    (cwd / "data.csv").write_bytes(b"id,email\n1,a@example.com\n")


def _run_sh(block: str, cwd: Path, ran: list[str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> None:
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        text = " ".join(words)
        if text in NOT_RUN:
            continue
        commands: list[list[str]] = [[]]
        for word in words:
            if word == "&&":
                commands.append([])
            else:
                commands[-1].append(word.replace("s3://lake", f"file://{cwd}/lake"))
        for argv in commands:
            assert argv[0] == "envcrypt", f"README line is not an envcrypt command nor in NOT_RUN: {line!r}"
            action = " ".join(a for a in argv[1:3] if not a.startswith("-"))
            stdin = io.TextIOWrapper(io.BytesIO(STDIN.get(action, b"")))
            monkeypatch.setattr(sys, "stdin", stdin)
            code = main(argv[1:])
            captured = capsys.readouterr()
            assert code == 0, f"README line {line!r} exited {code}: {captured.err}"
            ran.append(" ".join(argv))


def _run_python(block: str, endpoint: str, bucket: str) -> None:
    code = block.replace('"endpoint_url": "..."', f'"endpoint_url": "{endpoint}"')
    code = re.sub(r"\blake\b", bucket, code)
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, str(README), "exec"), namespace)  # the README's own example


@pytest.mark.cloud
def test_readme_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], moto_server: str) -> None:
    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    s3: Any = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    ran: list[str] = []
    for language, block in blocks():
        if language == "sh":
            _run_sh(block, tmp_path, ran, monkeypatch, capsys)
        elif block.splitlines()[0] not in NOT_RUN_PYTHON:
            _run_python(block, moto_server, bucket)
    # the examples did what they say
    assert any(c.startswith("envcrypt key create") for c in ran) and len(ran) >= 15
    assert (tmp_path / "lake" / "raw" / "2026" / "part-0.csv").read_bytes()[:8] == b"ENVCRYPT"
    assert (tmp_path / "lake" / "legacy" / "old.csv").read_bytes()[:8] == b"ENVCRYPT"
    assert (tmp_path / "data.csv").read_bytes() == b"id,email\n1,a@example.com\n"
    assert s3.list_objects_v2(Bucket=bucket, Prefix="sales/")["KeyCount"] >= 1


def test_every_readme_shell_line_is_run_or_listed() -> None:
    """A new README line that the doc test would not run must be given a reason here."""
    for language, block in blocks():
        if language != "sh":
            continue
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and " ".join(words) not in NOT_RUN:
                assert words[0] == "envcrypt", line
    listed = {" ".join(shlex.split(line, comments=True)) for lang, b in blocks() if lang == "sh"
              for line in b.splitlines()}
    assert set(NOT_RUN) <= listed, "NOT_RUN names lines the README no longer has"
    firsts = {b.splitlines()[0] for lang, b in blocks() if lang == "python"}
    assert set(NOT_RUN_PYTHON) <= firsts, "NOT_RUN_PYTHON names blocks the README no longer has"
