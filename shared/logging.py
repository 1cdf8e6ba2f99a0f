"""One JSON object per line on stdout, with the fields DESIGN §7 names; secrets never written."""
from __future__ import annotations

import atexit
import sys
import threading
import time

import orjson
from loguru import logger

from shared import process

# Keys whose values must never reach a log line, whatever a caller passes.
SECRET_KEYS = frozenset({"passcode", "password", "token", "access_token", "authorization",
                         "secret", "api_key", "jwt"})
_service = "spotter"


def _line(level: str, ts: float, msg: str, fields: dict) -> dict:
    line = {"level": level, "ts": ts, "service": _service, "msg": msg}
    for key, value in fields.items():
        line[key] = "[redacted]" if key.lower() in SECRET_KEYS else value
    return line


def _json_sink(message) -> None:
    record = message.record
    line = _line(record["level"].name.lower(), round(record["time"].timestamp(), 3), record["message"],
                 record["extra"])
    if record["exception"] is not None:
        exc = record["exception"]
        line["exception"] = f"{exc.type.__name__}: {exc.value}"
    sys.stdout.buffer.write(orjson.dumps(line, default=str) + b"\n")
    sys.stdout.flush()


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_min_level = 20


def _encode(level: str, ts: float, msg: str, fields: dict) -> bytes | None:
    """One line's JSON, or None below the configured level."""
    if _LEVELS[level] < _min_level:
        return None
    return orjson.dumps(_line(level, ts, msg, fields), default=str)


def write_lines(lines: list[tuple[str, str, dict]]) -> None:
    """Many (level, msg, fields) records in one write: the per-message lines of a batch
    skip loguru's per-call machinery, which would cost more than the message itself."""
    now = round(time.time(), 3)
    out = [line for level, msg, fields in lines if (line := _encode(level, now, msg, fields)) is not None]
    if out:
        sys.stdout.buffer.write(b"\n".join(out) + b"\n")
        sys.stdout.flush()


class DeferredLines:
    """Lines gathered and written together at most `interval_s` after they were logged.

    The ingress logs one line per request; at thousands of requests a second a write() and a
    flush() each cost more than the line itself. The price: a line appears up to `interval_s`
    late, and a process killed outright loses that last fraction of a second of lines
    (`flush()` runs at a normal exit). Under gevent the flusher thread is a greenlet.
    """

    def __init__(self, interval_s: float = 0.2, max_bytes: int = 64 * 1024):
        self.interval_s, self.max_bytes = interval_s, max_bytes
        self._lines: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock()
        self._flusher_pid: int | None = None  # a thread does not survive a fork: one per process
        atexit.register(self.flush)

    def write(self, level: str, msg: str, fields: dict) -> None:
        line = _encode(level, round(time.time(), 3), msg, fields)
        if line is None:
            return
        with self._lock:
            self._lines.append(line)
            self._size += len(line) + 1
            full = self._size >= self.max_bytes
        if self._flusher_pid != process.pid():
            self._flusher_pid = process.pid()
            threading.Thread(target=self._run, name="log-flusher", daemon=True).start()
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines, self._size = self._lines, [], 0
            if lines:  # under the lock: chunks leave in the order they were gathered
                sys.stdout.buffer.write(b"\n".join(lines) + b"\n")
                sys.stdout.flush()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.flush()
            except (OSError, ValueError):  # stdout closed while the process exits
                return


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route every log call of this process to the JSON sink, tagged with `service`."""
    global _service, _min_level
    _service = service
    _min_level = _LEVELS.get(level.lower(), 20)
    logger.remove()
    logger.add(_json_sink, level=level.upper(), backtrace=False, diagnose=False)


log = logger
__all__ = ["log", "setup_logging", "SECRET_KEYS"]
