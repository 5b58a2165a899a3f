"""Progress of long tree operations: files, bytes, rate and ETA.

On a terminal, a tqdm bar (bytes, with the file count beside it); when the output
is not a terminal (a log, a pipe, CI), plain lines at most every ``interval``
seconds and one at the end, so logs stay readable.  Silent when disabled.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

__all__ = ["Progress", "human_bytes"]

#: seconds between two plain progress lines
PLAIN_INTERVAL = 2.0


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Thread-safe ``update(files, nbytes)``; silent when ``enabled`` is False.

    ``total`` counts files, ``total_bytes`` their bytes (None when unknown).
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, total_bytes: int | None = None,
                 stream: IO[str] | None = None, interval: float = PLAIN_INTERVAL) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.total_bytes = total_bytes
        self.count = 0
        self.bytes = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._lock = threading.Lock()
        self._bar: Any = None
        self._start = time.monotonic()
        self._last = self._start
        if enabled and _isatty(self.stream):
            from tqdm import tqdm

            by_bytes = bool(total_bytes)
            self._bar = tqdm(total=total_bytes if by_bytes else total, desc=desc, file=self.stream,
                             unit="B" if by_bytes else "file", unit_scale=by_bytes, unit_divisor=1024,
                             dynamic_ncols=True, leave=True)
            self._bar.set_postfix_str(self._files())

    def _files(self) -> str:
        return f"{self.count}/{self.total} files"

    def update(self, n: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            self.count += n
            self.bytes += nbytes
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.set_postfix_str(self._files(), refresh=False)
                self._bar.update(nbytes if self.total_bytes else n)
                return
            now = time.monotonic()
            if now - self._last >= self.interval and self.count < self.total:
                self._last = now
                self._line(now)

    def line(self) -> str:
        """The plain progress line: files, bytes, rate, ETA."""
        return self._text(time.monotonic())

    def _text(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.bytes / elapsed
        parts = [f"{self.desc}: {self._files()}"]
        if self.total_bytes is not None:
            parts.append(f"{human_bytes(self.bytes)} of {human_bytes(self.total_bytes)}")
        else:
            parts.append(human_bytes(self.bytes))
        parts.append(f"{human_bytes(rate)}/s")
        if self.count >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total_bytes and rate > 0:
            parts.append(f"ETA {_duration((self.total_bytes - self.bytes) / rate)}")
        else:
            files_rate = self.count / elapsed
            parts.append(f"ETA {_duration((self.total - self.count) / files_rate)}" if files_rate else "ETA ?")
        return ", ".join(parts)

    def _line(self, now: float) -> None:
        self.stream.write(self._text(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self._files())
            self._bar.close()
        else:
            self._line(time.monotonic())


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
