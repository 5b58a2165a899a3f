"""Every example runs as written (each uses its own throwaway vault and directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FS_EXAMPLES = ["pandas_quickstart.py", "s3_pipeline.py", "dask_job.py", "tenant_lake.py"]


@pytest.mark.parametrize("name", FS_EXAMPLES)
def test_example_runs(name: str) -> None:
    pytest.importorskip("pandas")
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("ok")
