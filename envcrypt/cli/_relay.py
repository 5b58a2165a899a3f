"""A copy loop split over two threads: one fills buffers, the other drains them.

``envcrypt encrypt`` seals on the calling thread while a helper thread reads the next
buffers of the input; ``envcrypt decrypt`` decrypts on the calling thread while a helper
writes the previous buffers to the output.  The file I/O (a memory copy into or out of the
page cache, the GIL released) then runs on the second core instead of between two batches.
A few buffers go round in order through two queues, so each is either being filled, being
drained, or waiting -- never two at once -- and the output is written in input order.

Either side's exception stops the other one and is raised on the calling thread; the
helper is joined before :func:`relay` returns or raises, so no buffer is touched afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Literal

__all__ = ["BUFFERS", "relay"]

#: buffers in flight: one filling, one draining, one ready to swap in
BUFFERS = 3

_STOP = object()  # put in a side's queue: return now


def relay(fill: Callable[[memoryview], int], drain: Callable[[memoryview], Any], size: int,
          helper: Literal["fill", "drain"]) -> None:
    """Until ``fill`` returns 0: ``fill(buffer)`` -> n, then ``drain(buffer[:n])``, in order,
    with ``helper`` ("fill" or "drain") run by a helper thread and the other side by this one."""
    empty: SimpleQueue[Any] = SimpleQueue()
    full: SimpleQueue[Any] = SimpleQueue()
    for _ in range(BUFFERS):
        empty.put(memoryview(bytearray(size)))
    failed: list[BaseException] = []
    cancelled = threading.Event()

    def fill_side() -> None:
        while not cancelled.is_set():
            buf = empty.get()
            if buf is _STOP:
                return
            n = fill(buf)
            full.put((buf, n))
            if not n:
                return

    def drain_side() -> None:
        while not cancelled.is_set():
            item = full.get()
            if item is _STOP:
                return
            buf, n = item
            if not n:
                return
            drain(buf[:n])
            empty.put(buf)

    on_helper, on_caller = (fill_side, drain_side) if helper == "fill" else (drain_side, fill_side)
    # the queue each side waits on: a _STOP there wakes it
    helper_waits, caller_waits = (empty, full) if helper == "fill" else (full, empty)

    def run() -> None:
        try:
            on_helper()
        except BaseException as exc:  # handed to the calling thread, which raises it
            failed.append(exc)
            caller_waits.put(_STOP)

    thread = threading.Thread(target=run, name="envcrypt-cli-io", daemon=True)
    thread.start()
    try:
        on_caller()
    except BaseException:
        cancelled.set()  # the helper stops at its next buffer: nothing more is read or written
        raise
    finally:
        helper_waits.put(_STOP)
        thread.join()
    if failed:
        raise failed[0]
