"""The shared thread pool survives fork and restores the GIL switch interval."""

from __future__ import annotations

import os
import sys

import pytest

from envcrypt import chunked
from envcrypt.chunked import ChunkCipher
from envcrypt.format import CHUNK_SIZE, SEALED_CHUNK_SIZE

RUN = 4 * chunked.PARALLEL_MIN_CHUNKS  # long enough to use the pool


def _sealed() -> tuple[ChunkCipher, bytes, memoryview]:
    cipher = ChunkCipher(os.urandom(32), os.urandom(12))
    plain = os.urandom(RUN * CHUNK_SIZE)
    sealed = memoryview(bytearray(RUN * SEALED_CHUNK_SIZE))
    cipher.seal(0, memoryview(plain), sealed, final=False)
    return cipher, plain, sealed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_parallel_runs_work_in_a_forked_child() -> None:
    cipher, plain, sealed = _sealed()  # the parent's pool now exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        out = memoryview(bytearray(len(plain)))
        cipher.open(0, sealed, out, final=False)
        os._exit(0 if bytes(out) == plain else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_switch_interval_is_restored_after_parallel_runs() -> None:
    before = sys.getswitchinterval()
    cipher, plain, sealed = _sealed()
    out = memoryview(bytearray(len(plain)))
    cipher.open(0, sealed, out, final=False)
    assert bytes(out) == plain
    assert sys.getswitchinterval() == before


def test_a_run_after_the_pool_stopped_taking_work_is_done_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """At interpreter exit the pool refuses new work (a pyarrow thread may still read then):
    the run completes on the calling thread, byte-identical."""
    from concurrent.futures import ThreadPoolExecutor

    cipher, plain, sealed = _sealed()
    stopped = ThreadPoolExecutor(1)
    stopped.shutdown()
    monkeypatch.setattr(chunked, "_pool", stopped)
    monkeypatch.setattr(chunked, "_threads", 2)
    out = memoryview(bytearray(len(plain)))
    cipher.open(0, sealed, out, final=False)
    assert bytes(out) == plain
