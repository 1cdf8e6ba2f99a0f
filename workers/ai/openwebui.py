"""A chat completion from an OpenWebUI endpoint, over its OpenAI-compatible API (standard library only).

Environment: OPENWEBUI_URL (unset: no endpoint, `client()` is None), OPENWEBUI_API_KEY (sent as a
bearer token), OPENWEBUI_MODEL (required with a URL), OPENWEBUI_CHAT_PATH (default
/api/chat/completions, OpenWebUI's; /v1/chat/completions for plain OpenAI-compatible servers),
OPENWEBUI_TIMEOUT_S (60, for the whole call).

Failures come out as the runtime's errors: 5xx, 429, 408, timeouts and connection errors as
TransientError (retried with growing delay); other answers as PermanentError (dead-lettered).
Neither the API key nor the prompt, nor a response body that may echo it, goes into an error
message: those end up in log lines and dead-letter headers.
"""
from __future__ import annotations

import functools
import http.client
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from shared.config import OpenWebUIConfig
from shared.errors import PermanentError, TransientError

MAX_RESPONSE_BYTES = 1024 * 1024  # an answer is text; more than this is not a chat completion
RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Completion:
    answer: str
    model: str
    finish_reason: str | None


class Client:
    def __init__(self, config: OpenWebUIConfig):
        self.config = config
        parts = urlsplit(config.url)
        # http.client rather than urllib: no redirects followed (a POST must not turn into a GET
        # elsewhere) and no file:// or ftp:// whatever the URL says
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.host, self._port = parts.hostname, parts.port
        self._path = parts.path.rstrip("/") + config.chat_path

    def complete(self, prompt: str) -> Completion:
        """One user message in, the assistant's answer out."""
        body = orjson.dumps({"model": self.config.model, "messages": [{"role": "user", "content": prompt}],
                             "stream": False})
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        deadline = time.monotonic() + self.config.timeout_s
        conn = self._connection_class(self.host, self._port, timeout=self.config.timeout_s)
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            _limit(conn, deadline)  # socket timeouts count per operation; the deadline counts for the call
            response = conn.getresponse()
            _check_status(response.status)  # before the body: an error page is not worth reading
            raw = _read(conn, response, deadline)
        except TimeoutError:
            raise TransientError(f"the AI endpoint did not answer within {self.config.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"the AI endpoint could not be reached ({type(exc).__name__})") from None
        finally:
            conn.close()
        return _completion(raw, self.config.model)


def _read(conn, response, deadline: float) -> bytes:
    """The body, within the call's deadline: a server trickling bytes must not hold the transaction."""
    chunks, size = [], 0
    while True:
        _limit(conn, deadline)
        chunk = response.read1(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise PermanentError(f"the AI endpoint's answer is larger than {MAX_RESPONSE_BYTES} bytes",
                                 reason="ai_bad_response")
        chunks.append(chunk)


def _limit(conn, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


def _check_status(status: int) -> None:
    if status >= 500 or status in RETRYABLE_STATUS:
        raise TransientError(f"the AI endpoint answered {status}")
    if status in (401, 403):  # our key, not the prompt: fix OPENWEBUI_API_KEY, then replay the dead letters
        raise PermanentError(f"the AI endpoint refused our API key ({status})", reason="ai_unauthorized")
    if not 200 <= status < 300:
        raise PermanentError(f"the AI endpoint rejected the request ({status})", reason="ai_rejected")


def _completion(raw: bytes, model: str) -> Completion:
    try:
        body = orjson.loads(raw)
        choice = body["choices"][0]
        answer = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise PermanentError("the AI endpoint's answer is not a chat completion", reason="ai_bad_response") from None
    if isinstance(answer, str):
        answer = answer.replace("\x00", "")  # PostgreSQL text cannot hold NUL; no model means one
    if not isinstance(answer, str) or not answer.strip():
        raise PermanentError("the AI endpoint's chat completion holds no answer", reason="ai_bad_response")
    answered_by = body.get("model")
    if not isinstance(answered_by, str) or not answered_by.strip() or "\x00" in answered_by:
        answered_by = model
    finish_reason = choice.get("finish_reason")
    return Completion(answer, answered_by[:200], finish_reason[:64] if isinstance(finish_reason, str) else None)


@functools.cache
def client() -> Client | None:
    """The process's client, from the environment; None when no endpoint is configured."""
    config = OpenWebUIConfig.from_env()
    return Client(config) if config else None
