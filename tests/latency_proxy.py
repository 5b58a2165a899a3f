"""A loopback HTTP proxy that adds a fixed delay to every request, in front of the moto server.

moto answers on loopback in well under a millisecond, so a client that sends
its requests one after another looks as fast as one that sends them together;
a real object store costs tens of milliseconds per request.  The proxy holds
every request for ``delay`` seconds, then forwards it unchanged (method, path,
query, headers, body) and returns the answer unchanged.  It counts the requests
it saw (per method) and the most that were in flight at once, so a test can
assert how many requests an operation made and how concurrent they were.

Used by ``tests/test_fs_listing.py`` and ``benchmarks/bench_listing.py``.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from typing import Any

#: headers about one hop, never forwarded (aiohttp sets its own)
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "proxy-authorization", "proxy-authenticate", "content-length", "host"})


class LatencyProxy:
    """``with LatencyProxy(upstream, delay=0.02) as url:`` a loopback endpoint in front of ``upstream``."""

    def __init__(self, upstream: str, delay: float = 0.02) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.requests: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.url = ""

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def start(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._run, args=(port,), name="latency-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, port: int) -> None:
        asyncio.run(self._serve(port))

    async def _serve(self, port: int) -> None:
        import aiohttp
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

        async def handle(request: web.Request) -> web.StreamResponse:
            with self._lock:
                self.requests[request.method] += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
                body = await request.read()
                headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
                async with session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                           data=body, allow_redirects=False) as upstream:
                    data = await upstream.read()
                    out = web.StreamResponse(status=upstream.status)
                    for key, value in upstream.headers.items():
                        if key.lower() not in _HOP:
                            out.headers.add(key, value)
                    length = upstream.headers.get("Content-Length")
                    if request.method == "HEAD" and length is not None:
                        out.headers["Content-Length"] = length  # what the object holds, sent without a body
                    else:
                        out.content_length = len(data)
                    await out.prepare(request)
                    if request.method != "HEAD":
                        await out.write(data)
                    await out.write_eof()
                    return out
            finally:
                with self._lock:
                    self.in_flight -= 1

        app = web.Application(client_max_size=1 << 31)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await session.close()
