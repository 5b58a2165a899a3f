"""How runs of chunks use threads and the native kernel: the same bytes in every mode, a shared
helper thread that survives fork and shutdown, many threads at once, and no interpreter-wide
setting ever changed."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from envcrypt import _kernel, chunked
from envcrypt.chunked import ChunkCipher
from envcrypt.errors import IntegrityError
from envcrypt.format import CHUNK_SIZE, SEALED_CHUNK_SIZE, TAG_SIZE

MODES = ["pure", "compiled", "hybrid"] if _kernel.available() else ["pure"]
RUN = 4 * chunked.PIECE_CHUNKS  # long enough to share with the helper thread


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    _kernel.use(request.param)
    yield request.param
    _kernel.use(None)


def _reference_seal(key: bytes, base: bytes, first: int, plain: bytes, final: bool) -> bytes:
    """Chunk by chunk with AESGCM.encrypt: the C2SP body layout, independent of envcrypt's drivers."""
    aead, b = AESGCM(key), int.from_bytes(base, "big")
    pieces = [plain[o : o + CHUNK_SIZE] for o in range(0, len(plain), CHUNK_SIZE)]
    if final and (not pieces or len(pieces[-1]) == CHUNK_SIZE):
        pieces.append(b"")
    return b"".join(aead.encrypt((b ^ (first + i)).to_bytes(12, "big"), p, None) for i, p in enumerate(pieces))


def _sealed() -> tuple[ChunkCipher, bytes, memoryview]:
    cipher = ChunkCipher(os.urandom(32), os.urandom(12))
    plain = os.urandom(RUN * CHUNK_SIZE)
    sealed = memoryview(bytearray(RUN * SEALED_CHUNK_SIZE))
    cipher.seal(0, memoryview(plain), sealed, final=False)
    return cipher, plain, sealed


@pytest.mark.parametrize("chunks, tail, first", [(0, 0, 0), (0, 5, 7), (1, 0, 0), (63, 16383, 3), (64, 1, 0),
                                                  (129, 100, 2**38 - 200), (RUN, 0, 11), (RUN + 5, 9000, 0)])
def test_every_mode_gives_the_reference_bytes_and_opens_them(mode: str, chunks: int, tail: int, first: int) -> None:
    key, base = os.urandom(32), os.urandom(12)
    plain = os.urandom(chunks * CHUNK_SIZE + tail)
    want = _reference_seal(key, base, first, plain, final=True)
    cipher = ChunkCipher(key, base)
    out = bytearray(len(want) + 7)
    assert cipher.seal(first, memoryview(plain), memoryview(out), final=True) == len(want)
    assert bytes(out[: len(want)]) == want
    back = bytearray(len(plain))
    assert cipher.open(first, memoryview(want), memoryview(back), final=True) == len(plain)
    assert back == plain


@pytest.mark.parametrize("bad_chunk", [0, chunked.PIECE_CHUNKS + 1, RUN - 1, RUN])
def test_a_tampered_chunk_in_any_piece_zeroes_the_whole_output(mode: str, bad_chunk: int) -> None:
    key, base = os.urandom(32), os.urandom(12)
    plain = os.urandom(RUN * CHUNK_SIZE + 10)
    sealed = bytearray(_reference_seal(key, base, 0, plain, final=True))
    sealed[bad_chunk * SEALED_CHUNK_SIZE + 5] ^= 1
    out = bytearray(b"\xa5" * len(plain))
    with pytest.raises(IntegrityError):
        ChunkCipher(key, base).open(0, memoryview(sealed), memoryview(out), final=True)
    assert out == bytes(len(plain))


def test_many_threads_sealing_and_opening_at_once(mode: str) -> None:
    key, base = os.urandom(32), os.urandom(12)
    cipher = ChunkCipher(key, base)
    plains = [os.urandom(n * CHUNK_SIZE + n) for n in (1, 70, RUN, 2 * RUN, 3, 150, RUN + 1, 90)]

    def roundtrip(plain: bytes) -> bool:
        for _ in range(3):
            sealed = bytearray(len(plain) + (len(plain) // CHUNK_SIZE + 1) * TAG_SIZE)
            cipher.seal(5, memoryview(plain), memoryview(sealed), final=True)
            if bytes(sealed) != _reference_seal(key, base, 5, plain, final=True):
                return False
            back = bytearray(len(plain))
            cipher.open(5, memoryview(sealed), memoryview(back), final=True)
            if back != plain:
                return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(roundtrip, plains))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_parallel_runs_work_in_a_forked_child(mode: str) -> None:
    cipher, plain, sealed = _sealed()  # the parent's helper thread now exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        out = memoryview(bytearray(len(plain)))
        cipher.open(0, sealed, out, final=False)
        os._exit(0 if bytes(out) == plain else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_switch_interval_is_never_changed(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library never changes interpreter-wide settings: no call of sys.setswitchinterval at
    all, and the value seen from another thread during long parallel runs never moves."""
    calls: list[float] = []
    monkeypatch.setattr(sys, "setswitchinterval", calls.append)
    before = sys.getswitchinterval()
    seen: set[float] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.add(sys.getswitchinterval())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            cipher, plain, sealed = _sealed()
            out = memoryview(bytearray(len(plain)))
            cipher.open(0, sealed, out, final=False)
            assert bytes(out) == plain
    finally:
        stop.set()
        watcher.join()
    assert calls == []
    assert seen <= {before} and sys.getswitchinterval() == before


def test_no_module_of_the_package_sets_the_switch_interval() -> None:
    root = os.path.dirname(chunked.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith((".py", ".c")):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    assert "setswitchinterval" not in f.read(), name


def test_a_run_after_the_helper_stopped_taking_work_is_done_inline(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At interpreter exit the helper refuses new work (a pyarrow thread may still read then):
    the run completes on the calling thread, byte-identical."""
    cipher, plain, sealed = _sealed()
    stopped = ThreadPoolExecutor(1)
    stopped.shutdown()
    monkeypatch.setattr(_kernel, "_pool", stopped)
    out = memoryview(bytearray(len(plain)))
    cipher.open(0, sealed, out, final=False)
    assert bytes(out) == plain


def test_a_busy_helper_never_holds_a_run_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the helper thread is busy elsewhere, the caller takes every piece itself and returns
    without waiting for the helper."""
    if not _kernel.available():
        pytest.skip("needs the native kernel")
    gate = threading.Event()
    release = threading.Timer(30, gate.set)  # a broken version waits for this instead of failing forever
    release.start()
    busy = ThreadPoolExecutor(1)
    busy.submit(gate.wait)
    monkeypatch.setattr(_kernel, "_pool", busy)
    try:
        cipher, plain, sealed = _sealed()
        out = memoryview(bytearray(len(plain)))
        cipher.open(0, sealed, out, final=False)
        assert not gate.is_set()  # done while the helper was still busy
        assert bytes(out) == plain
    finally:
        gate.set()
        release.cancel()
        busy.shutdown()


needs_claims = pytest.mark.skipif(not _kernel.shared_runs(), reason="needs the native kernel's claim counter")


@needs_claims
def test_claims_from_many_threads_cover_a_run_exactly_once() -> None:
    native = _kernel.native()
    counter, n, got = bytearray(8), 100_003, []
    start = threading.Barrier(6)

    def claimer() -> None:
        start.wait()
        mine = []
        while (piece := native.claim(counter, n, 64)) is not None:
            mine.append(piece)
        got.extend(mine)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got.sort()
    assert got[0][0] == 0 and got[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(got, got[1:], strict=False))  # no gap, no overlap
    assert all(16 <= hi - lo <= 64 or hi == n for lo, hi in got)  # a quarter of what is left, within bounds


@needs_claims
def test_the_shared_kernel_reports_the_first_failed_chunk_of_all_its_pieces() -> None:
    cipher, plain, sealed = _sealed()
    bad = bytearray(sealed)
    for index in (RUN - 3, 70):
        bad[index * SEALED_CHUNK_SIZE + 5] ^= 1
    native = _kernel.native()
    out = bytearray(len(plain))
    # one thread claims every piece itself: the smallest failure across pieces comes back
    assert native.chunk_open_shared(cipher._key, cipher._base_nonce, 0, bytes(bad), out, RUN, bytearray(8), 16) == 70
    assert native.chunk_open_shared(cipher._key, cipher._base_nonce, 0, bytes(sealed), out, RUN, bytearray(8), 16) == -1
    assert bytes(out) == plain


@needs_claims
def test_a_failing_caller_stops_the_helper_and_returns_only_after_it() -> None:
    native = _kernel.native()
    n, helper_pieces, finished = 10_000, [], threading.Event()
    started = threading.Event()

    def helper(counter: bytearray, piece: int) -> int:
        started.set()
        while (got := native.claim(counter, n, piece)) is not None:
            helper_pieces.append(got)
            threading.Event().wait(0.002)  # a slow helper
        finished.set()
        return -1

    def caller(lo: int, hi: int) -> int:
        started.wait(10)
        raise RuntimeError("the caller's piece failed")

    with pytest.raises(RuntimeError):
        _kernel.run_claimed(n, 64, caller, helper)
    assert finished.is_set()  # the run's buffers are not handed back while the helper works
    assert sum(hi - lo for lo, hi in helper_pieces) < n // 2  # it stopped at its next claim


@needs_claims
def test_the_claim_counter_must_be_an_aligned_writable_8_bytes() -> None:
    native = _kernel.native()
    with pytest.raises(ValueError):
        native.claim(bytearray(4), 10, 4)
    with pytest.raises(ValueError):
        native.claim(memoryview(bytearray(16))[1:9], 10, 4)
    with pytest.raises(BufferError):  # read-only
        native.claim(bytes(8), 10, 4)
    with pytest.raises(ValueError):
        native.claim(bytearray(8), 10, 0)


@pytest.mark.skipif(not _kernel.available(), reason="needs the native kernel")
@pytest.mark.parametrize("count, src_len, dst_len, lo, hi", [
    (2, CHUNK_SIZE + 1, 2 * SEALED_CHUNK_SIZE, 0, 2),  # dst one byte short of the final chunk's tag
    (2, 3 * CHUNK_SIZE, 4 * SEALED_CHUNK_SIZE, 0, 2),  # src longer than two chunks
    (2, CHUNK_SIZE, 2 * SEALED_CHUNK_SIZE, 0, 3),  # range past the run
    (2, CHUNK_SIZE, 2 * SEALED_CHUNK_SIZE, 2, 1),  # empty reversed range
    (-1, 0, 0, 0, 0),
])
def test_the_kernel_refuses_spans_outside_its_buffers(count: int, src_len: int, dst_len: int, lo: int,
                                                      hi: int) -> None:
    native = _kernel._native
    assert native is not None
    if dst_len == 2 * SEALED_CHUNK_SIZE and src_len == CHUNK_SIZE + 1:
        dst_len = CHUNK_SIZE + 1 + 2 * TAG_SIZE - 1
    with pytest.raises(ValueError):
        native.chunk_seal(bytes(32), bytes(12), 0, bytes(src_len), bytearray(dst_len), count, lo, hi)
    with pytest.raises(ValueError):  # a final sealed chunk shorter than a tag
        native.chunk_open(bytes(32), bytes(12), 0, bytes(SEALED_CHUNK_SIZE + 15), bytearray(2 * CHUNK_SIZE), 2, 0, 2)
    with pytest.raises(ValueError):  # a bad key length
        native.chunk_seal(bytes(31), bytes(12), 0, bytes(10), bytearray(26), 1, 0, 1)


@pytest.mark.skipif(not _kernel.available(), reason="needs the native kernel")
def test_wycheproof_aes_gcm_through_the_chunk_kernel() -> None:
    """Every 96-bit-nonce, 128-bit-tag case without associated data (C2SP chunks have none) of
    aes_gcm_test.json as one final chunk at index 0, whose nonce is then the base nonce itself."""
    from tests.conftest import VECTORS

    native = _kernel._native
    assert native is not None
    data = json.loads((VECTORS / "aes_gcm_test.json").read_text())
    cases = [t for g in data["testGroups"] if g["ivSize"] == 96 and g["tagSize"] == 128
             for t in g["tests"] if not t["aad"] and len(t["msg"]) // 2 < CHUNK_SIZE]
    assert len(cases) > 10
    for case in cases:
        key, iv, msg = (bytes.fromhex(case[k]) for k in ("key", "iv", "msg"))
        sealed = bytes.fromhex(case["ct"] + case["tag"])
        out = bytearray(len(sealed) - TAG_SIZE)
        failed = native.chunk_open(key, iv, 0, sealed, out, 1, 0, 1)
        if case["result"] == "invalid":
            assert failed == 0
            continue
        assert failed == -1 and bytes(out) == msg
        again = bytearray(len(msg) + TAG_SIZE)
        assert native.chunk_seal(key, iv, 0, msg, again, 1, 0, 1) == -1 and bytes(again) == sealed


@needs_claims
def test_an_interrupted_wait_still_waits_for_the_helper_before_raising() -> None:
    """An exception raised into the waiting thread (a signal handler's timeout) must not hand the
    run's buffers back while the helper still works on them."""
    import signal

    native = _kernel.native()
    n, started, finished = 1_000, threading.Event(), threading.Event()

    def helper(counter: bytearray, piece: int) -> int:
        native.claim(counter, n, piece)
        started.set()
        threading.Event().wait(0.4)  # a long piece, in flight when the caller is done
        finished.set()
        return -1

    def caller(lo: int, hi: int) -> int:
        started.wait(10)
        return -1

    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError("the application's deadline")

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(TimeoutError):
            _kernel.run_claimed(n, 64, caller, helper)
        assert finished.is_set()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
