"""One harness target under atheris (coverage-guided libFuzzer):
``python -m tests.fuzz.atheris_target TARGET [libFuzzer flags]``; ``python -m tests.fuzz`` runs
every target this way for a bounded time when atheris is installed."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import envcrypt  # noqa: F401 - instrumented for coverage feedback
    from tests.fuzz import harness


def main() -> None:
    name = sys.argv[1]
    target = harness.TARGETS[name]
    harness.setting()
    corpus = Path(tempfile.mkdtemp(prefix=f"envcrypt-fuzz-{name}-"))
    for i, seed in enumerate(harness.seeds(name)):
        (corpus / f"seed{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], *sys.argv[2:], str(corpus)], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
