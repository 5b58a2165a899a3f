"""Throughput of the envcrypt core against OpenSSL (via cryptography) and cryptography.cobblestone.

Run:  .venv/bin/python benchmarks/bench_core.py [--size-mib 256] [--repeat 5] [--modes pure,hybrid]
      .venv/bin/python benchmarks/bench_core.py --pieces      (piece size sweep of a shared run)

Everything is measured in one run on the same data; figures are medians, and
the ratios are what to compare across machines (2 noisy cores here).  The
baseline is one ``AESGCM.encrypt_into`` / ``decrypt_into`` call over the whole
buffer (one core, cryptography's bundled OpenSSL); "two-core bound" is twice it.
Each kernel mode (envcrypt._kernel: pure, compiled, hybrid) is measured in turn.
"""

from __future__ import annotations

import argparse
import atexit
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from _timing import median_time
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import envcrypt
from envcrypt import _kernel, chunked

MiB = 1 << 20
KEY_URI = "local:bench"


class Sink(io.RawIOBase):
    """A writable stream that discards what it gets."""

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        return len(memoryview(b))  # type: ignore[arg-type]


def paired(fn: Callable[[], object], base: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds of ``fn``, and the median over repetitions of (base time / fn time), each
    pair measured back to back: the machine is shared, and a ratio of neighbours drifts least."""
    times, ratios = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        times.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    return statistics.median(times), statistics.median(ratios)


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def piece_sweep(n: int, r: int) -> int:
    """Seal and open one run of ``n`` bytes with pieces of 16..256 chunks (the default mode)."""
    data = memoryview(os.urandom(n))
    cipher = chunked.ChunkCipher(os.urandom(32), os.urandom(12))
    sealed = memoryview(bytearray(n + (n // chunked.CHUNK_SIZE + 1) * 16))
    out = memoryview(bytearray(n))
    base = AESGCM(os.urandom(32))
    ref = bytearray(n + 16)
    nonce = os.urandom(12)
    saved = chunked.PIECE_CHUNKS
    print(f"mode {_kernel.mode()}, {n // MiB} MiB run; ratio vs one encrypt_into in this run")
    try:
        for piece in (16, 32, 64, 128, 256):
            chunked.PIECE_CHUNKS = piece
            one = rate(n, median_time(lambda: base.encrypt_into(nonce, data, None, ref), r))
            seal = rate(n, median_time(lambda: cipher.seal(0, data, sealed, final=True), r))
            opened = rate(n, median_time(lambda: cipher.open(0, sealed, out, final=True), r))
            print(f"  piece {piece:4d} chunks: seal {seal / one:4.2f}x  open {opened / one:4.2f}x")
    finally:
        chunked.PIECE_CHUNKS = saved
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rss-gib", type=float, default=1.0, help="size for the peak-RSS streaming test")
    ap.add_argument("--modes", default=",".join(["pure", "compiled", "hybrid"] if _kernel.available() else ["pure"]),
                    help="kernel modes to measure (comma separated); the last one is used for the rest")
    ap.add_argument("--pieces", action="store_true", help="sweep the piece size of a shared run and stop")
    ap.add_argument("--rss-child", choices=["write", "read"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return rss_child(args)
    if args.pieces:
        return piece_sweep(args.size_mib * MiB, args.repeat)

    if "ENVCRYPT_VAULT" not in os.environ:  # a throwaway vault, removed at exit (children inherit it)
        os.environ["ENVCRYPT_VAULT"] = tempfile.mkdtemp(prefix="envcrypt-bench-vault-")
        atexit.register(shutil.rmtree, os.environ["ENVCRYPT_VAULT"], True)
    from envcrypt.keys.vault import LocalVault

    vault = LocalVault()
    if not vault.key_exists("bench"):
        vault.create_key("bench")

    n = args.size_mib * MiB
    r = args.repeat
    data = os.urandom(n)
    print(f"data {args.size_mib} MiB in memory, {os.cpu_count()} cores, median of {r}; GB/s = 1e9 bytes/s\n")
    rows: list[tuple[str, float]] = []

    # ---- baselines
    key = AESGCM.generate_key(256)
    aead = AESGCM(key)
    nonce = os.urandom(12)
    ct_oneshot = aead.encrypt(nonce, data, None)
    rows.append(("AESGCM.encrypt one-shot (fresh output)", rate(n, median_time(lambda: aead.encrypt(nonce, data, None), r))))
    rows.append(("AESGCM.decrypt one-shot (fresh output)", rate(n, median_time(lambda: aead.decrypt(nonce, ct_oneshot, None), r))))
    out_buf = bytearray(n + 16)
    rows.append(("AESGCM.encrypt_into preallocated", rate(n, median_time(lambda: aead.encrypt_into(nonce, data, None, out_buf), r))))
    plain_buf = bytearray(n)
    rows.append(("AESGCM.decrypt_into preallocated", rate(n, median_time(lambda: aead.decrypt_into(nonce, ct_oneshot, None, plain_buf), r))))

    from envcrypt import _buffers

    def fresh_fill() -> None:  # what the bytes API pays before any AES: a new n-byte result, first touched
        _, view = _buffers.new_bytes(n)
        view[:] = data

    rows.append(("fresh output: new_bytes + fill (the bytes API's floor)", rate(n, median_time(fresh_fill, r))))
    ctx = b"bench-context"

    def cob_encrypt() -> bytes:
        enc = Cobblestone256Encryptor(key, ctx)
        return enc.update(data) + enc.finalize()

    cob_ct = cob_encrypt()

    def cob_decrypt() -> bytes:
        dec = Cobblestone256Decryptor(key, ctx)
        return dec.update(cob_ct) + dec.finalize()

    rows.append(("cobblestone encrypt (bytes)", rate(n, median_time(cob_encrypt, r))))
    rows.append(("cobblestone decrypt (bytes)", rate(n, median_time(cob_decrypt, r))))

    blob = envcrypt.encrypt(data, KEY_URI)
    piece = 4 * MiB
    view = memoryview(data)
    buf = bytearray(piece)

    def stream_write() -> None:
        with envcrypt.open_writer(Sink(), KEY_URI) as w:
            for off in range(0, n, piece):
                w.write(view[off : off + piece])

    blob_io = io.BytesIO(blob)

    def stream_read() -> None:
        blob_io.seek(0)
        reader = envcrypt.open_reader(blob_io, trusted_keys=KEY_URI)
        while reader.readinto(buf):
            pass

    def enc_base() -> None:
        aead.encrypt_into(nonce, data, None, out_buf)

    def dec_base() -> None:
        aead.decrypt_into(nonce, ct_oneshot, None, plain_buf)

    checks: list[tuple[str, float, float]] = []
    modes = args.modes.split(",")
    for mode in modes:
        _kernel.use(mode)
        assert envcrypt.decrypt(envcrypt.encrypt(data[:100_000], KEY_URI), trusted_keys=KEY_URI) == data[:100_000]
        assert envcrypt.decrypt(blob, trusted_keys=KEY_URI) == data
        cases: list[tuple[str, Callable[[], object], Callable[[], object], float]] = [
            ("envcrypt.encrypt (bytes)", lambda: envcrypt.encrypt(data, KEY_URI), enc_base, 0.6),
            ("envcrypt.decrypt (bytes)", lambda: envcrypt.decrypt(blob, trusted_keys=KEY_URI), dec_base, 0.6),
            ("open_writer -> discarding sink", stream_write, enc_base, 0.65),
            ("open_reader.readinto reused buffer", stream_read, dec_base, 0.55),
        ]
        for name, fn, base, target in cases:
            seconds, ratio = paired(fn, base, r)
            rows.append((f"[{mode}] {name}", rate(n, seconds)))
            checks.append((f"[{mode}] {name}", ratio, target))

    table = dict(rows)
    width = max(len(k) for k in table)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:6.2f} GB/s")

    print("\nratios vs one encrypt_into / decrypt_into run just before each (median of pairs; target in brackets;"
          " the two-core bound is 2x)")
    for name, ratio, target in checks:
        verdict = "ok" if ratio >= target else "BELOW TARGET"
        print(f"  {name:<{width}}  {ratio:5.2f}x  [>= {target}x]  {verdict}  ({ratio / 2:.0%} of the two-core bound)")
    cob = [
        ("encrypt bytes / cobblestone encrypt", f"[{modes[-1]}] envcrypt.encrypt (bytes)", "cobblestone encrypt (bytes)"),
        ("decrypt bytes / cobblestone decrypt", f"[{modes[-1]}] envcrypt.decrypt (bytes)", "cobblestone decrypt (bytes)"),
    ]
    for name, ours, theirs in cob:
        print(f"  {name:<{width}}  {table[ours] / table[theirs]:5.2f}x")
    if _kernel.available():
        print(f"  native kernel runs with {_kernel.openssl_version()}")

    # ---- random access latency
    offset = min(200 * MiB, max(n - 4096, 0))
    calls: list[int] = []
    original = chunked.ChunkCipher.open

    def counting_open(self: chunked.ChunkCipher, first: int, src: memoryview, dst: memoryview, final: bool) -> int:
        calls.append(len(src) // chunked.SEALED_CHUNK_SIZE + (1 if len(src) % chunked.SEALED_CHUNK_SIZE else 0))
        return original(self, first, src, dst, final)

    reader = envcrypt.open_reader(io.BytesIO(blob), trusted_keys=KEY_URI)
    chunked.ChunkCipher.open = counting_open  # type: ignore[method-assign]
    try:
        latencies = []
        for _ in range(max(r, 20)):
            calls.clear()
            t0 = time.perf_counter()
            reader.seek(offset)
            got = reader.read(1024)
            latencies.append(time.perf_counter() - t0)
            assert got == data[offset : offset + 1024]
        decrypted = sum(calls)
        t0 = time.perf_counter()
        fresh = envcrypt.open_reader(io.BytesIO(blob), trusted_keys=KEY_URI)
        fresh.seek(offset)
        fresh.read(1024)
        cold = time.perf_counter() - t0
    finally:
        chunked.ChunkCipher.open = original  # type: ignore[method-assign]
    print(f"\n1 KiB read at offset {offset // MiB} MiB: median {statistics.median(latencies) * 1e6:.0f} us "
          f"(open + read: {cold * 1e6:.0f} us), chunks decrypted: {decrypted}  [<= 2]  "
          f"{'ok' if decrypted <= 2 else 'ABOVE TARGET'}")

    # ---- the cost of opening a stream: a 1 KiB object through open_writer vs the bytes API
    small = data[:1024]

    def small_streams() -> None:
        for _ in range(50):
            with envcrypt.open_writer(io.BytesIO(), KEY_URI) as w:
                w.write(small)

    def small_bytes() -> None:
        for _ in range(50):
            envcrypt.encrypt(small, KEY_URI)

    stream_s, ratio = paired(small_streams, small_bytes, max(r, 9))
    print(f"\n1 KiB object: open_writer + write + close {stream_s / 50 * 1e6:.0f} us, {1 / ratio:.2f}x the bytes API's "
          "envcrypt.encrypt (a stream's 4 MiB batch buffers come from a pool: no zeroing or page faults per stream)")

    # ---- peak RSS while streaming, in fresh child processes
    size = int(args.rss_gib * 1024) * MiB
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.envc")
        for mode in ("write", "read"):
            out = subprocess.run(
                [sys.executable, __file__, "--rss-child", mode, "--path", path, "--rss-gib", str(args.rss_gib)],
                check=True, capture_output=True, text=True, env=os.environ.copy(),
            ).stdout.split()
            added = int(out[0]) / MiB
            name = "open_writer" if mode == "write" else "open_reader"
            print(f"peak RSS added streaming {size / (1 << 30):.2f} GiB through {name}: {added:.1f} MiB  "
                  f"[<= 64 MiB]  {'ok' if added <= 64 else 'ABOVE TARGET'}  ({rate(size, float(out[1])):.2f} GB/s incl. disk)")
    return 0


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss_child(args: argparse.Namespace) -> int:
    size = int(args.rss_gib * 1024) * MiB
    block = os.urandom(4 * MiB)
    buf = bytearray(4 * MiB)
    envcrypt.encrypt(b"warm-up", KEY_URI)  # imports, vault and thread pool in place before the baseline
    base = _status("VmRSS")
    t0 = time.perf_counter()
    if args.rss_child == "write":
        with open(args.path, "wb") as f, envcrypt.open_writer(f, KEY_URI) as w:
            for _ in range(size // len(block)):
                w.write(block)
    else:
        with open(args.path, "rb") as f:
            reader = envcrypt.open_reader(f, trusted_keys=KEY_URI)
            while reader.readinto(buf):
                pass
    elapsed = time.perf_counter() - t0
    print(_status("VmHWM") - base, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
