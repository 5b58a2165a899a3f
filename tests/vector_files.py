"""The JSON vector files under tests/vectors/: tables of cases kept as data, like the golden file.

Each file has ``format`` and ``notes`` (what the fields mean) and lists of cases, each
with a ``comment`` used as the pytest id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> dict[str, Any]:
    """The parsed vector file ``tests/vectors/<name>``."""
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def case_id(case: dict[str, Any]) -> str:
    return str(case["comment"])
