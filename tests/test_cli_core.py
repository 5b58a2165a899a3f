"""``envcrypt encrypt|decrypt|demo`` through the real parser, on real files and pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import envcrypt
from envcrypt.cli import main


def test_encrypt_then_decrypt_files(tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    src.write_bytes(b"id,email\n" + b"".join(b"%d,user%d@example.com\n" % (i, i) for i in range(5000)))
    enc, dec = tmp_path / "rows.csv.envc", tmp_path / "back.csv"
    assert main(["encrypt", str(src), str(enc), "--context", "dataset=rows"]) == 0
    stored = enc.read_bytes()
    assert b"@example.com" not in stored
    assert envcrypt.inspect(stored).encryption_context == {"dataset": "rows"}
    assert main(["decrypt", str(enc), str(dec), "--context", "dataset=rows"]) == 0
    assert dec.read_bytes() == src.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".envcrypt-")]


def test_failed_decrypt_leaves_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(40_000))
    enc = tmp_path / "a.envc"
    assert main(["encrypt", str(src), str(enc)]) == 0
    blob = bytearray(enc.read_bytes())
    blob[-30] ^= 1
    enc.write_bytes(bytes(blob))
    out = tmp_path / "out.bin"
    assert main(["decrypt", str(enc), str(out)]) == 2
    assert "IntegrityError" in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".envcrypt-")]


def test_context_mismatch_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, enc = tmp_path / "a", tmp_path / "a.envc"
    src.write_bytes(b"x")
    assert main(["encrypt", str(src), str(enc), "--context", "tenant=a"]) == 0
    assert main(["decrypt", str(enc), str(tmp_path / "b"), "--context", "tenant=b"]) == 2
    assert "ContextMismatchError" in capsys.readouterr().err


def test_stdin_to_stdout_pipeline(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    cmd = [sys.executable, "-m", "envcrypt"]
    env = dict(os.environ)
    sealed = subprocess.run([*cmd, "encrypt", "-", "-"], input=data, capture_output=True, check=True, env=env).stdout
    assert sealed.startswith(b"ENVCRYPT") and data not in sealed
    opened = subprocess.run([*cmd, "decrypt", "-", "-"], input=sealed, capture_output=True, check=True, env=env).stdout
    assert opened == data


def test_demo_runs_on_the_default_vault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--rows", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "no plaintext marker appears in the stored bytes" in printed
    assert "tamper    flipping one stored bit -> IntegrityError" in printed
    stored = (tmp_path / "demo" / "customers.csv.envc").read_bytes()
    assert b"customer_id" not in stored and envcrypt.inspect(stored).key_uris == ["local:default/1"]
