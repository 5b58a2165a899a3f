"""``envcrypt encrypt|decrypt|demo`` through the real parser, on real files and pipes."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
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


# ---------------------------------------------------------------- one-line errors (issue 8, item 9)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "envcrypt", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"envcrypt {envcrypt_version()}"


def envcrypt_version() -> str:
    from importlib.metadata import version

    return version("envcrypt")


def test_errors_are_one_line_naming_the_path_and_debug_shows_the_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.envc"
    assert main(["decrypt", str(missing), str(tmp_path / "out")]) == 2
    lines = _lines(capsys.readouterr().err)
    assert lines == [f"envcrypt: FileNotFoundError: {missing}: No such file or directory"]
    (tmp_path / "a").write_bytes(b"x")
    enc = tmp_path / "a.envc"
    assert main(["encrypt", str(tmp_path / "a"), str(enc)]) == 0
    assert main(["decrypt", str(enc), str(tmp_path / "no" / "such" / "dir" / "out")]) == 2
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(tmp_path / "no" / "such" / "dir" / "out") in lines[0]
    assert ".envcrypt-" not in lines[0]  # never the temp file
    enc.write_bytes(enc.read_bytes()[:-1])
    assert main(["decrypt", str(enc), str(tmp_path / "out")]) == 2
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"envcrypt: IntegrityError: {enc}: ")
    with pytest.raises(FileNotFoundError):
        main(["decrypt", str(missing), str(tmp_path / "out"), "--debug"])
    done = subprocess.run([sys.executable, "-m", "envcrypt", "ls", str(tmp_path / "nothing-here")],
                          capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(_lines(done.stderr)) == 1


_WITHOUT_AWS = r"""
import sys
sys.modules["s3fs"] = None     # as if envcrypt[aws] were not installed: importing them fails
sys.modules["boto3"] = None
sys.modules["botocore"] = None
from envcrypt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_missing_extras_give_one_line_with_the_install_hint(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", _WITHOUT_AWS, *argv], capture_output=True, text=True,
                              env=dict(os.environ), cwd=tmp_path)

    for argv in (("ls", "s3://bucket/prefix"), ("put", "a", "envcrypt::s3://bucket/a"),
                 ("encrypt", "a", "a.envc", "--key", "aws-kms://alias/x")):
        done = run(*argv)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and len(_lines(done.stderr)) == 1
        assert "pip install 'envcrypt[aws]'" in done.stderr
    assert "MissingDependencyError" in run("ls", "s3://bucket/prefix").stderr


def test_python_api_type_and_key_uri_errors() -> None:
    with pytest.raises(TypeError, match="data must be bytes"):
        envcrypt.encrypt("text")  # type: ignore[arg-type]
    for uri in ("aws-kms:/alias/x", "aws-kms:alias/x"):
        with pytest.raises(envcrypt.errors.InvalidKeyUriError, match="not an aws-kms key URI"):
            envcrypt.encrypt(b"x", uri)


# ---------------------------------------------------------------- help and progress (issue 8, item 10)


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _commands(sub, f"{prefix}{name} ")
                else:
                    yield f"{prefix}{name}", sub


def test_every_argument_has_help_and_every_command_an_example() -> None:
    from envcrypt.cli import build_parser

    commands = dict(_commands(build_parser()))
    assert {"encrypt", "ls", "put", "key create", "vault init", "secret list", "manifest sign"} <= set(commands)
    for name, parser in commands.items():
        assert parser.epilog and f"envcrypt {name}" in parser.epilog, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != action.dest, (name, action.dest)


def test_progress_is_a_tqdm_bar_on_a_terminal(tmp_path: Path) -> None:
    import fcntl
    import struct
    import termios

    from envcrypt.fs.progress import Progress

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    with os.fdopen(slave, "w") as terminal:
        bar = Progress(4, "encrypt-tree", total_bytes=4 * 2**20, stream=terminal)
        for _ in range(4):
            bar.update(1, 2**20)
        bar.close()
    shown = b""
    while chunk := _read_some(master):
        shown += chunk
    os.close(master)
    text = shown.decode()
    assert "encrypt-tree" in text and "100%" in text and "4.00M/4.00M" in text and "4/4 files" in text


def _read_some(fd: int) -> bytes:
    import select

    ready, _, _ = select.select([fd], [], [], 0.2)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other side closed
        return b""
