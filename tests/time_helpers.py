"""A settable clock for the caches that take ``clock=`` (DEK cache, opened objects)."""

from __future__ import annotations


class Clock:
    """Starts at 1000 s; tests move ``now`` forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
