"""A progress bar for tree operations: tqdm when it is installed, else a plain stderr counter."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Thread-safe ``update(n_objects, n_bytes)``; silent when ``enabled`` is False."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.count = 0
        self._lock = threading.Lock()
        self._bar: Any = None
        self._last = 0.0
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                self._bar = None
            else:
                self._bar = tqdm(total=total, desc=desc, unit="obj", file=sys.stderr)

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.count += n
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.update(n)
                return
            now = time.monotonic()
            if now - self._last >= 0.2 or self.count == self.total:
                self._last = now
                sys.stderr.write(f"\r{self.desc}: {self.count}/{self.total}")
                sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write(f"\r{self.desc}: {self.count}/{self.total}\n")
            sys.stderr.flush()
