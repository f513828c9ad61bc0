"""A small fault-injecting HTTP proxy in front of the moto server.

The plugin's `endpoint` (or a test's EcsApi) points at `proxy.url`; every request is forwarded to moto
unless a fault is set:

    proxy.fault("5xx")            every request answers 503 ServiceUnavailableException
    proxy.fault("throttle")       every request answers 400 ThrottlingException
    proxy.fault("slow", delay=2)  requests are forwarded after `delay` seconds
    proxy.fault("refuse")         the port stops listening: connection refused
    proxy.fault(None)             back to plain forwarding (listening again on the same port)
    proxy.rewrite_status("RUNNING")  DescribeTasks answers report that lastStatus (ECS slow to stop)
    proxy.drop_tags(True)          DescribeTasks answers lose their `tags` key (as moto's under concurrency)

`proxy.counts` counts forwarded and faulted requests by ECS action (X-Amz-Target) and `proxy.log` keeps
(time, action) of each, so tests and the benchmark can see how many DescribeTasks calls the plugin makes
and when.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.counts: Counter[str] = Counter()
        self.faulted: Counter[str] = Counter()
        self.log: list[tuple[float, str]] = []  # (time.monotonic(), action) of every request
        self._mode: str | None = None
        self._delay = 0.0
        self._status: str | None = None
        self._drop_tags = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._listen()

    # -- control
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fault(self, mode: str | None, delay: float = 0.0) -> None:
        if mode not in (None, "5xx", "throttle", "slow", "refuse"):
            raise ValueError(f"unknown fault mode {mode!r}")
        with self._lock:
            self._mode, self._delay = mode, delay
        if mode == "refuse":
            self._close_listener()
        elif self._server is None:
            self._listen()

    def rewrite_status(self, status: str | None) -> None:
        with self._lock:
            self._status = status

    def drop_tags(self, on: bool) -> None:
        with self._lock:
            self._drop_tags = on

    def count(self, action: str) -> int:
        return self.counts[action]

    def close(self) -> None:
        self._close_listener()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing
    def _listen(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                proxy._handle(self)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

        for attempt in range(50):
            try:
                server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                if not self.port or attempt == 49:
                    raise
                time.sleep(0.1)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            if self._thread:
                self._thread.join(5)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        action = (req.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1] or req.path
        with self._lock:
            mode, delay, status, drop_tags = self._mode, self._delay, self._status, self._drop_tags
            self.counts[action] += 1
            self.log.append((time.monotonic(), action))
        if mode == "refuse":
            # The listener is closed, but a client's kept-alive connection still reaches us: drop it
            # unanswered, like a peer that went away.
            req.close_connection = True
            try:
                req.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if mode in ("5xx", "throttle"):
            with self._lock:
                self.faulted[action] += 1
            code, err = (503, "ServiceUnavailableException") if mode == "5xx" else (400, "ThrottlingException")
            self._reply(req, code, json.dumps({"__type": err, "message": f"injected fault: {err}"}).encode(),
                        {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": err})
            return
        if mode == "slow":
            time.sleep(delay)
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP}
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(req.command, req.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            if (status or drop_tags) and action == "DescribeTasks" and resp.status == 200:
                doc = json.loads(data)
                for t in doc.get("tasks") or []:
                    if status:
                        t["lastStatus"] = status
                    if drop_tags:
                        t.pop("tags", None)
                data = json.dumps(doc).encode()
            self._reply(req, resp.status, data, out_headers)
        except (OSError, http.client.HTTPException) as exc:
            self._reply(req, 502, str(exc).encode(), {"Content-Type": "text/plain"})
        finally:
            conn.close()

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, code: int, data: bytes, headers: dict) -> None:
        try:
            req.send_response(code)
            for k, v in headers.items():
                req.send_header(k, v)
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
