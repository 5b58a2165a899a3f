"""The ``envcrypt`` program's entry point, and a quick exit for commands that allow it.

An interpreter's normal exit tears down every module and object it loaded: ~10-35 ms
here after an ``envcrypt encrypt`` (cryptography, the vault, the kernel), longer than the
whole command on a small file.  A command that has closed everything it opened calls
:func:`allow_quick_exit`; :func:`program` then flushes stdout and stderr, runs the
``atexit`` callbacks (the vault's queued audit lines are committed there) and leaves with
``os._exit``.  Any other command, and any failure, exits the normal way.  Only the program
exits like this: :func:`envcrypt.cli.main` itself always returns.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

__all__ = ["allow_quick_exit", "program"]

_quick = False


def allow_quick_exit() -> None:
    """Called by a command that finished and left no open file or buffered data behind."""
    global _quick
    _quick = True


def program() -> NoReturn:
    """``envcrypt``: run the command line, then exit (quickly when the command allowed it)."""
    from . import main

    code = main()
    if _quick:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed or broken stdout: the normal exit reports it
            sys.exit(code)
        atexit._run_exitfuncs()
        os._exit(code)
    sys.exit(code)
