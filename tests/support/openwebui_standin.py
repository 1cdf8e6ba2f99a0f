"""A local stand-in for an OpenWebUI endpoint: the same chat completions API over real HTTP.

It checks the bearer key, records every request, and answers from a per-test script:
`standin.script(500, 200)` answers the first call 500 and the second with a completion;
`Reply(200, delay_s=3)` answers late (a timeout); once the script is used up it answers 200.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHAT_PATH = "/api/chat/completions"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content: str | None = None   # the answer of a 200; None: "stand-in answer #<call>"
    delay_s: float = 0.0         # wait before answering
    body: bytes | None = None    # sent as is instead of a completion (a broken answer)


@dataclass(frozen=True)
class Seen:
    """One request as the stand-in received it."""

    method: str
    path: str
    authorization: str | None
    body: dict | None


class OpenWebUIStandin:
    def __init__(self, api_key: str | None = None, model: str = "llama3.2:1b", chat_path: str = CHAT_PATH):
        self.api_key = api_key or f"sk-standin-{secrets.token_hex(12)}"
        self.model, self.chat_path = model, chat_path
        self.requests: list[Seen] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True  # a late answer must not hold up stop()
        self._thread = threading.Thread(target=self._server.serve_forever, name="openwebui-standin", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, **overrides) -> dict:
        """The worker's environment for this endpoint."""
        return {"OPENWEBUI_URL": self.url, "OPENWEBUI_API_KEY": self.api_key, "OPENWEBUI_MODEL": self.model,
                **overrides}

    def start(self) -> "OpenWebUIStandin":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: "int | Reply") -> None:
        with self._lock:
            self._script = [r if isinstance(r, Reply) else Reply(r) for r in replies]

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def _next(self, seen: Seen) -> tuple[int, Reply]:
        with self._lock:
            self.requests.append(seen)
            return len(self.requests), self._script.pop(0) if self._script else Reply()

    def _completion(self, call: int, reply: Reply) -> dict:
        return {"id": f"chatcmpl-{call}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": reply.content or f"stand-in answer #{call}"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


def _handler(standin: OpenWebUIStandin):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            authorization = self.headers.get("Authorization")
            call, reply = standin._next(Seen("POST", self.path, authorization, body))
            if self.path != standin.chat_path:
                return self._send(404, {"detail": "Not Found"})
            if authorization != f"Bearer {standin.api_key}":
                return self._send(401, {"detail": "Not authenticated"})
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.body is not None:
                return self._send(reply.status, reply.body)
            if reply.status == 200:
                return self._send(200, standin._completion(call, reply))
            return self._send(reply.status, {"detail": f"stand-in error {reply.status}"})

        def _send(self, status: int, payload) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout case)

        def log_message(self, *args):
            pass

    return Handler
