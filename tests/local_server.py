"""The network boundary every fake stands behind: an HTTP/1.1 server on 127.0.0.1, on a free port, serving from a
daemon thread. The fake Hugging Face Hub (fake_hf), W&B (fake_wandb), Genius (fake_genius) and the public corpora's
homes (test_public_data) subclass it and answer in `handle`; lyricdist's own code runs unchanged against them.

Every request is recorded as a dict: method, path (unquoted, without the query), query, headers (lower-case names),
body (bytes) and the monotonic time it arrived.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class LocalServer:
    def __init__(self):
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- what a fake defines -----------------------------------------------------------------------------------
    def handle(self, h: BaseHTTPRequestHandler, request: dict) -> None:
        """Answer `request` through `h` (with `send`/`send_json`)."""
        raise NotImplementedError

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _dispatch(self, method: str) -> None:
                url = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                request = {"method": method, "path": unquote(url.path), "query": url.query,
                           "headers": {k.lower(): v for k, v in self.headers.items()},
                           "body": self.rfile.read(n) if n else b"", "time": time.monotonic()}
                with fake._lock:
                    fake.requests.append(request)
                try:
                    fake.handle(self, request)
                except Exception as e:  # a bug in the fake: say so loudly in the response
                    fake.send(self, 500, f"{type(fake).__name__} error: {type(e).__name__}: {e}".encode())

            def do_GET(self):
                self._dispatch("GET")

            def do_HEAD(self):
                self._dispatch("HEAD")

            def do_POST(self):
                self._dispatch("POST")

            def do_PUT(self):
                self._dispatch("PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- answering ---------------------------------------------------------------------------------------------
    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None,
             head: bool = False) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def send_json(self, h: BaseHTTPRequestHandler, status: int, obj, headers: dict | None = None) -> None:
        self.send(h, status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})
