"""``ls -l`` (``ls(detail=True)``) of many objects through ``envcrypt::s3://`` against plain s3fs,
on a moto server behind a proxy that adds a fixed latency to every request.

Run:  .venv/bin/python benchmarks/bench_listing.py [--objects 1000] [--delay-ms 20] [--repeat 3]

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
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    os.environ["ENVCRYPT_VAULT"] = os.path.join(tempfile.mkdtemp(prefix="envcrypt-bench-ls-"), "vault")

    import s3fs

    from envcrypt import encrypt
    from envcrypt.fs import EnvcryptFileSystem
    from envcrypt.fs._heads import HEADS
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
        pool = {"max_pool_connections": S3_POOL_CONNECTIONS}
        plain = s3fs.S3FileSystem(client_kwargs={"endpoint_url": url}, config_kwargs=pool, skip_instance_cache=True)
        efs = EnvcryptFileSystem(target_protocol="s3", target_options={"client_kwargs": {"endpoint_url": url},
                                                                        "skip_instance_cache": True})

        def plain_ls() -> None:
            assert len(plain.ls("bench-ls/plain", detail=True, refresh=True)) == n

        def cold() -> None:
            HEADS.clear()
            efs.target.invalidate_cache()
            assert len(efs.ls("bench-ls/enc", detail=True)) == n

        def warm() -> None:
            efs.target.invalidate_cache()
            assert len(efs.ls("bench-ls/enc", detail=True)) == n

        def counted(fn: Callable[[], None]) -> tuple[int, int]:
            fn()  # connections up, imports done
            proxy.reset()
            fn()
            return proxy.total, proxy.max_in_flight

        print(f"envcrypt listing benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
              f"{n} objects, +{args.delay_ms:g} ms per request)")
        base_req, _ = counted(plain_ls)
        cold_req, cold_flight = counted(cold)
        warm_req, _ = counted(warm)
        base, ours_cold = paired(plain_ls, cold, args.repeat, warm=False)
        base_w, ours_warm = paired(plain_ls, warm, args.repeat * 3, warm=False)
        print(f"  plain s3fs ls -l                  {base * 1e3:8.0f} ms  {base_req:5d} requests")
        print(f"  envcrypt ls -l, cold (heads)      {ours_cold * 1e3:8.0f} ms  {cold_req:5d} requests, "
              f"{cold_flight} in flight at most  {ours_cold / base:6.2f}x  (target <= 3x)")
        print(f"  envcrypt ls -l, warm (head cache) {ours_warm * 1e3:8.0f} ms  {warm_req:5d} requests"
              f"{'':26}{ours_warm / base_w:6.2f}x  (target <= 1.1x; plain {base_w * 1e3:.0f} ms alongside)")
        proxy.stop()
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
