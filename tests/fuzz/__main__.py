"""``./dev fuzz [SECONDS] [TARGET ...]``: the fuzz targets of ``harness`` for longer than CI runs them.

With atheris installed (``pip install atheris``), each target runs under its
coverage-guided fuzzer for SECONDS (default 60); then, and without atheris,
the hypothesis tests run with ``ENVCRYPT_FUZZ_EXAMPLES`` (default 20,000) random examples.
Exits non-zero on the first finding, printing the input that produced it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

from tests.fuzz.harness import TARGETS


def main(argv: list[str]) -> int:
    seconds = int(argv[0]) if argv and argv[0].isdigit() else 60
    names = [a for a in argv if not a.isdigit()] or sorted(TARGETS)
    status = 0
    if importlib.util.find_spec("atheris") is not None:
        for name in names:
            print(f"atheris: {name} for {seconds} s", flush=True)
            done = subprocess.run([sys.executable, "-m", "tests.fuzz.atheris_target", name,
                                   f"-max_total_time={seconds}", "-rss_limit_mb=2048", "-print_final_stats=1",
                                   # a finding is written here (printed too), not into the work tree
                                   f"-artifact_prefix={tempfile.gettempdir()}/envcrypt-fuzz-{name}-"])
            status = status or done.returncode
    else:
        print("atheris is not installed (pip install atheris): hypothesis only", flush=True)
    env = dict(os.environ)
    env.setdefault("ENVCRYPT_FUZZ_EXAMPLES", "20000")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fuzz",
                           "-o", "addopts=", "--timeout=0"], env=env)
    return status or done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
