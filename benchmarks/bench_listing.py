"""``ls -l`` (``ls(detail=True)``) of many objects through ``envcrypt::s3://`` against plain s3fs,
on a moto server behind a proxy that adds a fixed latency to every request.

Run:  .venv/bin/python benchmarks/bench_listing.py [--objects 1000] [--delay-ms 20] [--repeat 3] [--in-flight 64,128,256]

moto answers on loopback in a fraction of a millisecond; a real object store
takes tens.  The proxy (``tests/latency_proxy.py``) holds each request for
``--delay-ms`` and counts requests and the most in flight at once, so the
table states how many requests each listing made and how concurrent they were.
moto runs in its own process.  Plain s3fs and the envcrypt target get the
same connection pool (``max_pool_connections`` = envcrypt's default for S3
targets it builds).

A plain listing is one LIST request.  A cold envcrypt listing adds one ranged
GET per object (its head: the first ``min(size, 2 KiB)`` bytes), fetched
concurrently; a warm one (head cache, objects unchanged) adds none.
Targets: cold <= 3x plain, warm <= 1.1x.

The "floor" rows time what any per-object fetch costs here without envcrypt:
the same LIST and the same ranged GETs, made with s3fs's own async API
(``_cat_file`` under a semaphore on s3fs's loop) at ``--in-flight`` requests in
flight; envcrypt is compared with the floor at its own concurrency.  moto serves
requests from one Python process, and botocore spends about as much CPU per
request on the client side; both are printed per request: on 2 shared cores
they, not the latency, bound how fast 1,000 GETs can go, so a cold listing
cannot beat the floor whatever envcrypt does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import paired

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.latency_proxy


def start_moto() -> tuple[str, subprocess.Popen[bytes]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    server = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return f"http://127.0.0.1:{port}", server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto_server did not start")


def alternating(fns: list[Callable[[], None]], repeat: int) -> list[float]:
    """Median times of ``fns``, called in turns round after round (all see the same load)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def floor_gets(fs: Any, paths: list[str], size: int, in_flight: int) -> None:
    """The ranged GETs a cold listing makes, with s3fs's own coroutines and no envcrypt code."""
    import fsspec.asyn

    async def run() -> None:
        gate = asyncio.Semaphore(in_flight)

        async def one(path: str) -> bytes:
            async with gate:
                return await fs._cat_file(path, start=0, end=size)  # type: ignore[no-any-return]

        await asyncio.gather(*(one(p) for p in paths))

    fsspec.asyn.sync(fs.loop, run)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--in-flight", default="64,256",
                    help="requests in flight for the floor rows (comma-separated; the first is envcrypt's own)")
    args = ap.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    os.environ["ENVCRYPT_VAULT"] = os.path.join(tempfile.mkdtemp(prefix="envcrypt-bench-ls-"), "vault")

    import s3fs

    from envcrypt import encrypt
    from envcrypt.fs import EnvcryptFileSystem
    from envcrypt.fs import _heads as heads
    from envcrypt.fs._heads import HEAD_CONCURRENCY, HEADS
    from envcrypt.fs.filesystem import S3_POOL_CONNECTIONS
    from tests.latency_proxy import LatencyProxy

    endpoint, server = start_moto()
    try:
        loader = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
        loader.mkdir("bench-ls")
        n = args.objects
        loader.pipe({f"bench-ls/enc/{i:05d}.json": encrypt(b'{"v": %d}' % i) for i in range(n)})
        loader.pipe({f"bench-ls/plain/{i:05d}.json": b'{"v": %d}' % i for i in range(n)})
        proxy = LatencyProxy(endpoint, args.delay_ms / 1000)
        url = proxy.start()
        flights = [int(k) for k in args.in_flight.split(",")]
        if flights[0] != HEAD_CONCURRENCY:
            flights.insert(0, HEAD_CONCURRENCY)

        def s3(pool: int) -> Any:
            return s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, skip_instance_cache=True,
                                     config_kwargs={"max_pool_connections": pool})

        plain = s3(S3_POOL_CONNECTIONS)

        def plain_ls() -> None:
            assert len(plain.ls("bench-ls/plain", detail=True, refresh=True)) == n

        def counted(fn: Callable[[], None]) -> tuple[int, int, str]:
            """Requests, most in flight, and CPU per request of moto and of this process (the
            client: botocore/aiohttp, envcrypt when it runs, and the proxy thread)."""
            fn()  # connections up, imports done
            proxy.reset()
            cpu, ours = cpu_seconds(server.pid), time.process_time()
            fn()
            total = proxy.total
            per = max(total, 1) / 1e3
            return total, proxy.max_in_flight, (f"CPU/request: moto {(cpu_seconds(server.pid) - cpu) / per:5.1f} ms, "
                                                f"client+proxy {(time.process_time() - ours) / per:4.1f} ms")

        print(f"envcrypt listing benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
              f"{n} objects, +{args.delay_ms:g} ms per request)")
        base_req, _, base_cpu = counted(plain_ls)
        made: list[Any] = []  # kept to the end: an s3fs dropped mid-run closes its client on the wrong loop

        def at(k: int) -> None:
            heads.HEAD_CONCURRENCY = k  # read by fetch_heads at each call
            floor_fs, efs = s3(k), EnvcryptFileSystem(fs=s3(k), skip_instance_cache=True)
            made.extend((floor_fs, efs))

            def floor() -> None:
                listed = floor_fs.ls("bench-ls/enc", detail=True, refresh=True)
                floor_gets(floor_fs, [e["name"] for e in listed], heads.PROBE_SIZE, k)

            def cold() -> None:
                HEADS.clear()
                efs.target.invalidate_cache()
                assert len(efs.ls("bench-ls/enc", detail=True)) == n

            floor_req, floor_flight, floor_cpu = counted(floor)
            cold_req, cold_flight, cold_cpu = counted(cold)
            base, t_floor, t_cold = alternating([plain_ls, floor, cold], args.repeat)
            print(f"  {k} in flight:")
            print(f"    plain s3fs ls -l                       {base * 1e3:7.0f} ms {base_req:5d} requests"
                  f"  {base_cpu}")
            print(f"    floor: LIST + GETs via s3fs, no envcrypt {t_floor * 1e3:7.0f} ms {floor_req:5d} requests"
                  f"  {floor_cpu}, {floor_flight:3d} in flight  "
                  f"{t_floor / base:6.2f}x plain")
            print(f"    envcrypt ls -l, cold (heads)           {t_cold * 1e3:7.0f} ms {cold_req:5d} requests"
                  f"  {cold_cpu}, {cold_flight:3d} in flight  "
                  f"{t_cold / base:6.2f}x plain (target <= 3x), {t_cold / t_floor:5.2f}x floor")

        for k in flights:
            at(k)
        heads.HEAD_CONCURRENCY = HEAD_CONCURRENCY
        efs = EnvcryptFileSystem(fs=plain, skip_instance_cache=True)

        def warm() -> None:
            efs.target.invalidate_cache()
            assert len(efs.ls("bench-ls/enc", detail=True)) == n

        warm_req, _, _ = counted(warm)
        base_w, ours_warm = paired(plain_ls, warm, args.repeat * 3, warm=False)
        print(f"  envcrypt ls -l, warm (head cache) {ours_warm * 1e3:8.0f} ms  {warm_req:5d} requests"
              f"{'':26}{ours_warm / base_w:6.2f}x  (target <= 1.1x; plain {base_w * 1e3:.0f} ms alongside)")
        proxy.stop()
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
