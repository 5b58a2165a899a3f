"""Loopback servers for faults no emulator produces, and a moto server that can be killed.

- ``MotoProcess``: a moto server in its own process on a fixed free port; ``kill9()``
  ends it with SIGKILL (no cleanup, as a crashed endpoint), ``start()`` brings up a fresh
  one on the same port.
- ``FaultProxy``: an HTTP/1.1 proxy in front of a real server that forwards requests
  unchanged, except that a ``rule`` may decide, per request, to cut the response body
  half-way (headers announce the full length, then the connection closes) or to drop
  the connection before answering.
- ``FaultyKms``: answers every KMS call with one configured fault (a throttling or 5xx
  error body as AWS sends it, or a stall longer than the client's read timeout) and
  counts the requests.

Everything binds 127.0.0.1 and every wait has a timeout, so a fault test cannot hang.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import free_port

MOTO_SERVER = str(Path(sys.executable).with_name("moto_server"))


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class MotoProcess:
    """A moto server process on one port, killable with SIGKILL and restartable on that port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        deadline = time.monotonic() + 15
        while True:  # the port may linger a moment after a kill
            self.proc = subprocess.Popen(
                [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_for_port(self.port, timeout=10)
                urllib.request.urlopen(self.url + "/moto-api/", timeout=5).close()
                return
            except Exception:
                self.kill9()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


# ---------------------------------------------------------------------------- the proxy

#: what a rule returns for a request: None (forward unchanged), "cut" (send half the response
#: body, then close) or "drop" (close the connection without an answer)
Rule = Callable[[str, str, dict[str, str]], str | None]


class _LoopbackServer:
    """An HTTP server on a free loopback port, serving ``_handler()`` on a daemon thread."""

    def _serve(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FaultProxy(_LoopbackServer):
    """A loopback HTTP proxy to ``upstream`` (``http://127.0.0.1:PORT``) applying ``rule``."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.rule: Rule = lambda method, path, headers: None
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, what the rule did)
        self._serve()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()}
                action = proxy.rule(self.command, self.path, headers)
                proxy.log.append((self.command, self.path, action))
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                    self.send_response_only(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(key, value)
                    # a HEAD answer carries the object's length, not its (empty) payload's
                    length = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(payload)))
                    self.end_headers()
                    if action == "cut" and len(payload) > 1:
                        self.wfile.write(payload[: len(payload) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


# ---------------------------------------------------------------------------- a faulty KMS


class FaultyKms(_LoopbackServer):
    """Every KMS call gets ``fault``: ``("error", status, code)`` or ``("stall", seconds)``."""

    def __init__(self) -> None:
        self.fault: tuple[Any, ...] = ("error", 400, "ThrottlingException")
        self.requests = 0
        self.targets: list[str] = []
        self._serve()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        kms = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                kms.requests += 1
                kms.targets.append(str(self.headers.get("X-Amz-Target", "")))
                if kms.fault[0] == "stall":
                    time.sleep(kms.fault[1])
                    self.close_connection = True
                    return
                _, status, code = kms.fault
                body = json.dumps({"__type": code, "message": f"simulated {code}"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/")
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
