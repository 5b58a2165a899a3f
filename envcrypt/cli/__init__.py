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

from ..errors import EnvcryptError, InternalError, NotEncryptedError

#: command-group modules, each with register(subparsers)
GROUPS = ("envcrypt.cli.core", "envcrypt.cli.keys", "envcrypt.cli.fs", "envcrypt.cli.parquet", "envcrypt.cli.columns",
          "envcrypt.cli.cert", "envcrypt.cli.mount")

#: top-level command -> the group that registers it.  ``main`` imports only that group, so
#: ``envcrypt encrypt`` starts without fsspec, the vault CLI or Arrow (tests/test_cli_startup.py
#: checks this table against what the groups register).  A command missing here still works:
#: it just builds the whole parser.
COMMAND_GROUPS = {
    **dict.fromkeys(("encrypt", "decrypt", "demo"), "envcrypt.cli.core"),
    **dict.fromkeys(("key", "secret", "vault", "audit"), "envcrypt.cli.keys"),
    **dict.fromkeys(("ls", "cat", "cp", "put", "get", "rm", "inspect", "rewrap", "migrate", "encrypt-tree",
                     "decrypt-tree", "manifest"), "envcrypt.cli.fs"),
    "parquet": "envcrypt.cli.parquet",
    "columns": "envcrypt.cli.columns",
    "cert": "envcrypt.cli.cert",
    **dict.fromkeys(("mount", "unmount"), "envcrypt.cli.mount"),
}

#: argument names that hold the path a command works on, most specific first
PATH_ARGS = ("url", "src", "file")

#: Python keyword spellings in library messages -> the CLI flag that does the same
CLI_SPELLINGS = {"pass plaintext='allow'": "pass --plaintext allow", "plaintext='allow'": "--plaintext allow"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # ~15 ms: only for --version

    try:
        return version("envcrypt")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for (argparse's own action needs it up front)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"envcrypt {_version()}")
        parser.exit()


def build_parser(groups: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every group of ``GROUPS`` (or only ``groups``) registered."""
    parser = argparse.ArgumentParser(
        prog="envcrypt", description="Envelope encryption for files, data lakes and table columns.",
        epilog="example: envcrypt encrypt data.csv data.csv.envc   (envcrypt COMMAND -h: each command's help)",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in GROUPS if groups is None else groups:
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


def _groups_for(argv: Sequence[str]) -> tuple[str, ...] | None:
    """The one group that registers the command in ``argv``, or None (build all: help, typos)."""
    command = next((a for a in argv if not a.startswith("-")), None)  # top-level options take no value
    group = COMMAND_GROUPS.get(command or "")
    return (group,) if group in GROUPS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_groups_for(argv))
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
        if isinstance(exc, InternalError):  # a bug, not the input: reported like any unexpected error
            print(error_line(exc, None) + " (--debug shows the traceback)", file=sys.stderr)
            return 1
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
