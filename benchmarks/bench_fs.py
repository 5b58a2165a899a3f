"""The envcrypt fsspec filesystem against its baselines, all measured in one run.

Run:  .venv/bin/python benchmarks/bench_fs.py [--gib 1] [--s3-mib 256] [--objects 1000] [--repeat 3]

Ratios (medians; 2 noisy cores, so compare ratios, not absolute figures):

1. 1 GiB write + read through ``envcrypt::memory://`` vs streaming the same
   bytes through ``open_writer`` / ``open_reader`` on a BytesIO   (target >= 0.8x)
2. 1 KiB read at offset 200 MiB vs the plain target, file already open, on
   S3 (moto) and on a local file                                   (target <= 2x)
3. 256 MiB put / get through ``envcrypt::s3://`` on moto vs plain s3fs  (target >= 0.9x)
4. ``ls -l`` of 1,000 objects vs plain s3fs, cold (heads fetched) and warm
   (head cache), on loopback moto without added latency (``bench_listing.py``
   measures it behind a proxy that adds a fixed delay per request, with the
   request counts)                                                   (target <= 2x)
5. stored bytes fetched by ``read_parquet(columns=[one])`` vs plain s3fs
   (pandas defaults) and vs the minimum (footer + that column's chunks)  (target <= 1.1x)
"""

from __future__ import annotations

import argparse
import atexit
import io
import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

from _timing import median_time

MiB = 1 << 20
ROWS: list[tuple[str, float, str, str]] = []


def row(name: str, ratio: float, target: str, detail: str) -> None:
    ROWS.append((name, ratio, target, detail))
    print(f"  {name:48} {ratio:7.2f}x  (target {target})  {detail}", flush=True)


# ---------------------------------------------------------------- 1. memory


def bench_memory(size: int, repeat: int) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    from envcrypt import open_reader, open_writer
    from envcrypt.fs import EnvcryptFileSystem

    data = os.urandom(MiB) * (size // MiB)
    target = MemoryFileSystem(global_store=False, skip_instance_cache=True)
    fs = EnvcryptFileSystem(fs=target, skip_instance_cache=True)

    def through_fs() -> None:
        with fs.open("/bench", "wb") as f:
            f.write(data)
        assert len(fs.cat_file("/bench")) == size
        target.rm("/bench")

    def through_streams() -> None:
        buf = io.BytesIO()
        with open_writer(buf) as w:
            w.write(data)
        buf.seek(0)
        assert len(open_reader(buf).read()) == size

    base = median_time(through_streams, repeat)
    ours = median_time(through_fs, repeat)
    row("1 GiB write+read, memory:// vs streams", base / ours, ">= 0.8x throughput",
        f"fs {2 * size / ours / 1e9:.2f} GB/s, streams {2 * size / base / 1e9:.2f} GB/s")


# ---------------------------------------------------------------- S3 helpers


def start_moto() -> tuple[str, Any]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return f"http://127.0.0.1:{port}", server


def counting_s3(endpoint: str) -> Any:
    """A real s3fs that counts the body bytes of every GetObject response."""
    import s3fs

    class CountingS3(s3fs.S3FileSystem):
        got = 0

        async def _call_s3(self, method: str, *args: Any, **kwargs: Any) -> Any:
            out = await super()._call_s3(method, *args, **kwargs)
            if method == "get_object":
                type(self).got += int(out.get("ContentLength") or 0)
            return out

    return CountingS3(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


# ---------------------------------------------------------------- 2. random 1 KiB reads


def random_reads(f: Any, offsets: list[int]) -> float:
    times = []
    for off in offsets:
        t0 = time.perf_counter()
        f.seek(off)
        assert len(f.read(1024)) == 1024
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_random_read(plain_fs: Any, efs: Any, plain_path: str, enc_path: str, where: str, n: int) -> None:
    import random

    rng = random.Random(5)
    offsets = [200 * MiB + rng.randrange(16 * MiB) for _ in range(n)]
    with plain_fs.open(plain_path, "rb", cache_type="none") as f:
        base = random_reads(f, offsets)
    with efs.open(enc_path, "rb") as f:
        ours = random_reads(f, offsets)
    row(f"1 KiB read at 200 MiB, {where} (open file)", ours / base, "<= 2x time",
        f"envcrypt {ours * 1e3:.3f} ms, plain {base * 1e3:.3f} ms")


# ---------------------------------------------------------------- 3. put / get


def bench_put_get(plain: Any, efs: Any, bucket: str, size: int, repeat: int, tmp: str) -> None:
    src = os.path.join(tmp, "put.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(MiB) * (size // MiB))
    base_put = median_time(lambda: plain.put_file(src, f"{bucket}/plain/put.bin"), repeat)
    ours_put = median_time(lambda: efs.put_file(src, f"{bucket}/enc/put.bin"), repeat)
    row(f"{size // MiB} MiB put, envcrypt::s3 vs s3fs", base_put / ours_put, ">= 0.9x throughput",
        f"envcrypt {size / ours_put / 1e6:.0f} MB/s, s3fs {size / base_put / 1e6:.0f} MB/s")
    dst = os.path.join(tmp, "get.bin")
    base_get = median_time(lambda: plain.get_file(f"{bucket}/plain/put.bin", dst), repeat)
    ours_get = median_time(lambda: efs.get_file(f"{bucket}/enc/put.bin", dst), repeat)
    row(f"{size // MiB} MiB get, envcrypt::s3 vs s3fs", base_get / ours_get, ">= 0.9x throughput",
        f"envcrypt {size / ours_get / 1e6:.0f} MB/s, s3fs {size / base_get / 1e6:.0f} MB/s")
    os.unlink(src)
    os.unlink(dst)


# ---------------------------------------------------------------- 4. ls -l


def bench_ls(plain: Any, efs: Any, bucket: str, count: int, repeat: int) -> None:
    from envcrypt import encrypt
    from envcrypt.fs._heads import HEADS

    blobs = {f"{bucket}/many/{i:05d}.json": encrypt(b'{"v": %d}' % i) for i in range(count)}
    plain.pipe(blobs)
    plain.pipe({f"{bucket}/plainmany/{i:05d}.json": b'{"v": %d}' % i for i in range(count)})

    def plain_ls() -> None:
        assert len(plain.ls(f"{bucket}/plainmany", detail=True, refresh=True)) == count

    def cold() -> None:
        HEADS.clear()
        plain.invalidate_cache()
        assert len(efs.ls(f"{bucket}/many", detail=True)) == count

    def warm() -> None:
        plain.invalidate_cache()
        assert len(efs.ls(f"{bucket}/many", detail=True)) == count

    base = median_time(plain_ls, repeat)
    ours_cold = median_time(cold, repeat)
    warm()
    ours_warm = median_time(warm, repeat)
    row(f"ls -l of {count} objects, cold (heads fetched)", ours_cold / base, "<= 2x time",
        f"envcrypt {ours_cold * 1e3:.0f} ms, s3fs {base * 1e3:.0f} ms")
    row(f"ls -l of {count} objects, warm (head cache)", ours_warm / base, "<= 2x time",
        f"envcrypt {ours_warm * 1e3:.0f} ms, s3fs {base * 1e3:.0f} ms")


# ---------------------------------------------------------------- 5. parquet bytes


def bench_parquet_bytes(plain: Any, efs: Any, bucket: str, endpoint: str) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    df = pd.DataFrame({f"c{i}": rng.random(1_000_000) for i in range(8)})
    buf = io.BytesIO()
    df.to_parquet(buf)
    plain.pipe_file(f"{bucket}/p/plain.parquet", buf.getvalue())
    with efs.open(f"{bucket}/p/enc.parquet", "wb") as f:
        f.write(buf.getvalue())
    meta = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    column = [meta.row_group(g).column(3).total_compressed_size for g in range(meta.num_row_groups)]
    footer = int.from_bytes(buf.getvalue()[-8:-4], "little") + 8
    minimum = sum(column) + footer

    plain.invalidate_cache()
    type(plain).got = 0
    pd.read_parquet(f"s3://{bucket}/p/plain.parquet", columns=["c3"], filesystem=plain)
    plain_bytes = type(plain).got
    type(plain).got = 0
    efs.invalidate_cache()
    pd.read_parquet(f"{bucket}/p/enc.parquet", columns=["c3"], filesystem=efs)
    ours = type(plain).got
    row("read_parquet(columns=[one]) bytes vs minimum", ours / minimum, "<= 1.1x bytes",
        f"envcrypt {ours / MiB:.2f} MiB, minimum {minimum / MiB:.2f} MiB, file {len(buf.getvalue()) / MiB:.1f} MiB")
    row("read_parquet(columns=[one]) bytes vs plain s3fs", ours / plain_bytes, "<= 1.1x bytes",
        f"envcrypt {ours / MiB:.2f} MiB, plain s3fs (defaults) {plain_bytes / MiB:.2f} MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="size of the memory:// test")
    ap.add_argument("--s3-mib", type=int, default=256, help="size of the S3 put/get object (>= 217)")
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reads", type=int, default=200, help="random 1 KiB reads per target")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="envcrypt-bench-fs-")
    atexit.register(shutil.rmtree, tmp, True)  # the vault and the files of the run
    os.environ["ENVCRYPT_VAULT"] = os.path.join(tmp, "vault")
    from envcrypt.fs import EnvcryptFileSystem

    print(f"envcrypt fs benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    bench_memory(int(args.gib * 1024) * MiB, args.repeat)

    endpoint, server = start_moto()
    try:
        plain = counting_s3(endpoint)
        efs = EnvcryptFileSystem(fs=plain, skip_instance_cache=True)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        plain.mkdir(bucket)
        size = max(args.s3_mib, 217) * MiB
        bench_put_get(plain, efs, bucket, size, args.repeat, tmp)
        bench_random_read(plain, efs, f"{bucket}/plain/put.bin", f"{bucket}/enc/put.bin", "S3 (moto)", args.reads)

        local = EnvcryptFileSystem(target_protocol="file", skip_instance_cache=True)
        path = os.path.join(tmp, "local.bin")
        with local.open(path + ".enc", "wb") as f, open(path, "wb") as g:
            block = os.urandom(MiB)
            for _ in range(217):
                f.write(block)
                g.write(block)
        bench_random_read(local.target, local, path, path + ".enc", "local file", args.reads * 5)

        bench_ls(plain, efs, bucket, args.objects, args.repeat)
        bench_parquet_bytes(plain, efs, bucket, endpoint)
    finally:
        server.stop()
    print("\nsummary")
    for name, ratio, target, _ in ROWS:
        print(f"  {name:48} {ratio:7.2f}x  (target {target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
