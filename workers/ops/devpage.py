"""The example page `workers dev` serves: the browser client (ingress/client/spotter.js) at work.

A frontend developer opens it while the stack runs and watches the send queue, the receipts and
the inbox of a made-up user. Two routes, on 127.0.0.1 only:

- `/`: workers/ops/devpage/index.html, with the ingress URL put in, so the page imports the client
  from the ingress (cross-origin, as an app would; the dev CORS default allows this origin);
- `/token?user_id=<uuid>`: a short-lived development bearer token for that user, minted the way
  `workers token` does. Development only: anyone who reaches it gets a token for any user.
"""
from __future__ import annotations

import html
import json
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PAGE = Path(__file__).with_name("devpage") / "index.html"
PLACEHOLDER = "{{INGRESS_URL}}"


class DevPage:
    """DevPage(ingress_url, port, token_for).start() serves the page until stop(); port 0 picks one."""

    def __init__(self, ingress_url: str, port: int, token_for: Callable[[str], str]):
        # read once: the page is a few KiB, and a broken install fails here, not on the first request
        self.page = PAGE.read_text().replace(PLACEHOLDER, html.escape(ingress_url.rstrip("/"), quote=True))
        self.token_for = token_for
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.devpage = self
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> "DevPage":
        self._thread = threading.Thread(target=self.server.serve_forever, name="devpage", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "spotter-devpage"

    def do_GET(self) -> None:
        page: DevPage = self.server.devpage
        # A web page elsewhere could point a DNS name at 127.0.0.1 (DNS rebinding) and read
        # /token as same-origin: answer only requests addressed to the loopback names.
        if self.headers.get("Host", "") not in (f"127.0.0.1:{page.port}", f"localhost:{page.port}"):
            return self._send(421, "text/plain", b"misdirected request\n")
        url = urlsplit(self.path)
        if url.path == "/":
            return self._send(200, "text/html; charset=utf-8", page.page.encode())
        if url.path == "/token":
            user_id = parse_qs(url.query).get("user_id", [""])[0]
            try:
                user_id = str(uuid.UUID(user_id))
            except ValueError:
                return self._json(400, {"error": "bad_request", "detail": "user_id must be a UUID"})
            return self._json(200, {"token": page.token_for(user_id)})
        return self._send(404, "text/plain", b"not found\n")

    def _json(self, status: int, body: dict) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # tokens expire; an edited page shows on reload
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-") -> None:
        pass  # one line a request would drown the workers' logs in the `workers dev` terminal
