"""The ``envcrypt`` command line, built on the public API only.

Each command group lives in its own module with a ``register(subparsers)``
function; ``main`` wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ..errors import EnvcryptError

#: command-group modules, each with register(subparsers)
GROUPS = ("envcrypt.cli.core", "envcrypt.cli.keys", "envcrypt.cli.fs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envcrypt", description="Envelope encryption for files, data lakes and table columns."
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except BrokenPipeError:  # the reader of our output went away (``| head``)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except EnvcryptError as exc:
        print(f"envcrypt: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"envcrypt: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
