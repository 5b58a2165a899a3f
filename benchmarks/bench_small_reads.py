"""Small reads through ``envcrypt::`` against the plain target, all measured in one run.

Run:  .venv/bin/python benchmarks/bench_small_reads.py [--repeat 5] [--reads 300]

Every figure is a median ratio against the same operation on the plain
target in the same run, the two measured alternately (2 noisy cores: compare
ratios, not absolute times).
Each read below opens the object again (no file kept open), so what is
measured is the per-open cost: header, trust, DEK (read-side DEK cache) and
the chunks of the range.

1. ``cat_file(path, off, off + 1 KiB)`` at a random offset past 200 MiB, memory://
   (target <= 2x plain and <= 50 us) and file:// (target <= 3x).  The "floor" row
   under it is plain + one ``AESGCM.decrypt`` of one sealed 16 KiB chunk (the
   least a read of authenticated plaintext costs, no envcrypt code), so the table
   shows when a ratio target lies below the cost of authenticating one chunk
2. zarr v3 on file:// (one object per chunk): full read and a slice   (target <= 1.5x)
3. ``fsspec.parquet.open_parquet_file(columns=[one])`` + ``pq.read_table``,
   file://                                                             (target <= 1.2x)
   and its floor: plain + one thread's ``AESGCM.decrypt_into`` of the chunks the
   read must authenticate (fsspec asks for a 1 MiB footer sample, then for the
   column chunks and the footer again: ~4 MiB of chunks for 1.6 MB of column)
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _timing import paired

# this checkout's envcrypt, not an installed one (a script's own directory comes first on sys.path)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MiB = 1 << 20
ROWS: list[tuple[str, float, str]] = []


def row(name: str, ours: float, base: float, target: str, label: str = "target ") -> None:
    ratio = ours / base
    ROWS.append((name, ratio, label + target))
    print(f"  {name:52} {ratio:6.2f}x  ({label}{target})  envcrypt {ours * 1e6:9.1f} us, "
          f"plain {base * 1e6:9.1f} us", flush=True)


def bench_cat_range(plain: Any, efs: Any, plain_path: str, enc_path: str, where: str, n: int, target: str) -> None:
    rng = random.Random(7)
    offsets = iter([200 * MiB + rng.randrange(16 * MiB) for _ in range(3 * n + 3)])  # floor_row reads too

    def base_read() -> None:
        off = next(offsets)
        plain.cat_file(plain_path, off, off + 1024)

    def our_read() -> None:
        off = next(offsets)
        efs.cat_file(enc_path, off, off + 1024)

    base, ours = paired(base_read, our_read, n)
    row(f"1 KiB cat_file range at 200 MiB, {where}", ours, base, target)
    if where == "memory://":
        floor_row(base_read, n)


def floor_row(base_read: Any, n: int) -> None:
    """What authenticating the one chunk a small read needs costs: one ``AESGCM.decrypt`` of a
    sealed 16 KiB chunk (no envcrypt code), timed alternately with the plain read.  A read that
    returns only authenticated plaintext cannot cost less than plain + this."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    sealed = aead.encrypt(nonce, os.urandom(16 * 1024), None)
    base, floor = paired(base_read, lambda: aead.decrypt(nonce, sealed, None), n)
    row("  floor: plain + one AESGCM.decrypt of a 16 KiB chunk", base + floor, base,
        f"the least a read of authenticated bytes costs: the decrypt alone is {floor * 1e6:.1f} us", label="")


def write_big(efs: Any, plain: Any, enc_path: str, plain_path: str) -> None:
    block = os.urandom(MiB)
    with efs.open(enc_path, "wb") as f, plain.open(plain_path, "wb") as g:
        for _ in range(217):
            f.write(block)
            g.write(block)


def bench_zarr(tmp: str, repeat: int) -> None:
    import numpy as np
    import zarr

    data = np.random.default_rng(3).random((2000, 2000))
    options = {"plain": {"auto_mkdir": True}, "envcrypt": {}}
    urls = {"plain": f"file://{tmp}/plain.zarr", "envcrypt": f"envcrypt::file://{tmp}/enc.zarr"}
    arrays = {}
    for name, url in urls.items():
        store = zarr.storage.FsspecStore.from_url(url, storage_options=options[name],
                                                  read_only=False)
        arr = zarr.create_array(store, shape=data.shape, chunks=(200, 200), dtype="f8")
        arr[:] = data
        ro = zarr.storage.FsspecStore.from_url(url, storage_options=options[name],
                                               read_only=True)
        arrays[name] = zarr.open_array(ro, mode="r")
    assert np.array_equal(arrays["envcrypt"][:], data)
    base, ours = paired(lambda: arrays["plain"][:], lambda: arrays["envcrypt"][:], repeat)
    row("zarr v3 full read (100 chunk objects), file://", ours, base, "<= 1.5x")
    base, ours = paired(lambda: arrays["plain"][150:250, 150:250], lambda: arrays["envcrypt"][150:250, 150:250],
                        repeat * 10)
    row("zarr v3 slice (4 chunk objects), file://", ours, base, "<= 1.5x")


def bench_open_parquet(tmp: str, repeat: int) -> None:
    import fsspec
    import fsspec.parquet
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from envcrypt.fs import EnvcryptFileSystem

    rng = np.random.default_rng(1)
    df = pd.DataFrame({f"c{i}": rng.random(200_000) for i in range(8)})
    plain = fsspec.filesystem("file")
    efs = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
    df.to_parquet(f"{tmp}/plain.parquet", row_group_size=50_000)
    with efs.open(f"{tmp}/enc.parquet", "wb") as f:
        df.to_parquet(f, row_group_size=50_000)

    def read(fs: Any, path: str) -> None:
        with fsspec.parquet.open_parquet_file(path, fs=fs, columns=["c3"], engine="pyarrow") as f:
            assert pq.read_table(f, columns=["c3"]).num_rows == len(df)

    base, ours = paired(lambda: read(plain, f"{tmp}/plain.parquet"), lambda: read(efs, f"{tmp}/enc.parquet"),
                        repeat * 4)
    row("open_parquet_file(columns=[one]) + read_table, file://", ours, base, "<= 1.2x")
    chunks = parquet_chunks(efs, f"{tmp}/enc.parquet", lambda: read(efs, f"{tmp}/enc.parquet"))
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    sealed, out = aead.encrypt(nonce, os.urandom(16 * 1024), None), bytearray(16 * 1024)

    def authenticate() -> None:  # the chunks of one read, opened as fast as one thread can
        for _ in range(chunks):
            aead.decrypt_into(nonce, sealed, None, out)

    base, floor = paired(lambda: read(plain, f"{tmp}/plain.parquet"), authenticate, repeat * 4)
    row(f"  floor: plain + AESGCM.decrypt_into of its {chunks} chunks", base + floor, base,
        f"envcrypt is {ours / (base + floor):.2f}x this", label="")


def parquet_chunks(efs: Any, path: str, read: Any) -> int:
    """The 16 KiB chunks one envcrypt read of ``path`` authenticates (footer sample and
    column chunks: fsspec reads the footer twice), from the ranges it asks for."""
    from envcrypt.fs import _ranges

    asked: list[tuple[int | None, int | None]] = []
    real = efs.cat_ranges

    def spy(paths: list[str], starts: Any, ends: Any, **kwargs: Any) -> Any:
        n = len(paths)
        asked.extend(zip(starts if isinstance(starts, list) else [starts] * n,
                         ends if isinstance(ends, list) else [ends] * n, strict=True))
        return real(paths, starts, ends, **kwargs)

    efs.cat_ranges = spy
    try:
        read()
    finally:
        del efs.cat_ranges
    opened = efs._open_object(efs._strip_protocol(path))
    sealed = 16 * 1024 + 16
    return sum(-(-(p.hi - p.lo) // sealed) for p in (_ranges.plan(opened, s, e) for s, e in asked))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reads", type=int, default=300, help="random 1 KiB reads per target")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="envcrypt-bench-small-")
    atexit.register(shutil.rmtree, tmp, True)
    os.environ["ENVCRYPT_VAULT"] = os.path.join(tmp, "vault")
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem

    from envcrypt.fs import EnvcryptFileSystem

    print(f"envcrypt small-read benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    memory = MemoryFileSystem(global_store=False, skip_instance_cache=True)
    efs = EnvcryptFileSystem(fs=memory, skip_instance_cache=True)
    write_big(efs, memory, "/enc.bin", "/plain.bin")
    bench_cat_range(memory, efs, "/plain.bin", "/enc.bin", "memory://", args.reads, "<= 2x, <= 50 us")
    memory.store.clear()

    local = LocalFileSystem()
    lfs = EnvcryptFileSystem(fs=local, skip_instance_cache=True)
    write_big(lfs, local, f"{tmp}/enc.bin", f"{tmp}/plain.bin")
    bench_cat_range(local, lfs, f"{tmp}/plain.bin", f"{tmp}/enc.bin", "file://", args.reads, "<= 3x")
    os.unlink(f"{tmp}/enc.bin")
    os.unlink(f"{tmp}/plain.bin")

    bench_zarr(tmp, args.repeat)
    bench_open_parquet(tmp, args.repeat)
    print("\nsummary")
    for name, ratio, target in ROWS:
        print(f"  {name:52} {ratio:6.2f}x  ({target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
