"""The ``envcrypt`` command line, built on the public API only.

Each command group lives in its own module with a ``register(subparsers)``
function; ``main`` wires them together and is the one error boundary: every
``EnvcryptError`` and ``OSError`` becomes one line on stderr naming the path and
a non-zero exit (2); anything else one line and exit 1.  ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from ..errors import EnvcryptError, NotEncryptedError

#: command-group modules, each with register(subparsers)
GROUPS = ("envcrypt.cli.core", "envcrypt.cli.keys", "envcrypt.cli.fs", "envcrypt.cli.parquet", "envcrypt.cli.columns",
          "envcrypt.cli.cert", "envcrypt.cli.mount")

#: argument names that hold the path a command works on, most specific first
PATH_ARGS = ("url", "src", "file")

#: Python keyword spellings in library messages -> the CLI flag that does the same
CLI_SPELLINGS = {"pass plaintext='allow'": "pass --plaintext allow", "plaintext='allow'": "--plaintext allow"}


def _version() -> str:
    try:
        return version("envcrypt")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envcrypt", description="Envelope encryption for files, data lakes and table columns.",
        epilog="example: envcrypt encrypt data.csv data.csv.envc   (envcrypt COMMAND -h: each command's help)",
    )
    parser.add_argument("--version", action="version", version=f"envcrypt {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def _target(args: argparse.Namespace) -> str | None:
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value != "-":
            return value
    return None


def _is_temp(path: object) -> bool:
    return isinstance(path, str) and os.path.basename(path).startswith(".envcrypt-")


def _forms(target: str) -> set[str]:
    """The spellings of ``target`` a message may use (as given, without protocol, absolute)."""
    bare = target.split("::")[-1]
    bare = bare.split("://", 1)[-1] if "://" in bare else os.path.abspath(bare)
    return {target, bare.rstrip("/") or bare}


def error_line(exc: BaseException, target: str | None) -> str:
    """One line for ``exc``: the error's name, its message in CLI terms, the path it concerns."""
    if isinstance(exc, OSError) and not isinstance(exc, EnvcryptError):
        where = exc.filename if exc.filename is not None and not _is_temp(exc.filename) else target
        what = exc.strerror or str(exc)
        line = f"{where}: {what}" if where else what
        if exc.filename2 is not None and not _is_temp(exc.filename2):
            line += f" (-> {exc.filename2})"
        return f"envcrypt: {type(exc).__name__}: {line}"
    message = " ".join(str(exc).split())  # one line
    if isinstance(exc, NotEncryptedError):
        for python, cli in CLI_SPELLINGS.items():
            message = message.replace(python, cli)
    if target and not any(form in message for form in _forms(target)):
        message = f"{target}: {message}"
    return f"envcrypt: {type(exc).__name__}: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    target = _target(args)
    try:
        result = args.func(args)
    except BrokenPipeError:  # the reader of our output went away (``| head``)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("envcrypt: interrupted", file=sys.stderr)
        return 130
    except (EnvcryptError, OSError, ValueError, TypeError) as exc:
        if args.debug:
            raise
        print(error_line(exc, target), file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        print(error_line(exc, target) + " (unexpected: --debug shows the traceback)", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
