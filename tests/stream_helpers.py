"""Helpers shared by the stream tests: a non-seekable source that delivers short reads."""

from __future__ import annotations

import io
from typing import IO, Any, cast


class Pipe(io.RawIOBase):
    """A non-seekable source with short reads."""

    def __init__(self, data: bytes, step: int = 6007) -> None:
        self._src, self._step = io.BytesIO(data), step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._src.readinto(memoryview(buffer)[: self._step])


def pipe(data: bytes, step: int = 6007) -> IO[bytes]:
    """A :class:`Pipe`, typed as the binary file object the API takes."""
    return cast(IO[bytes], Pipe(data, step))
