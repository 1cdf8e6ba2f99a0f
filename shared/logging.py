"""One JSON object per line on stdout, with the fields DESIGN §7 names; secrets never written."""
from __future__ import annotations

import sys
import time

import orjson
from loguru import logger

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


def write_lines(lines: list[tuple[str, str, dict]]) -> None:
    """Many (level, msg, fields) records in one write: the per-message lines of a batch
    skip loguru's per-call machinery, which would cost more than the message itself."""
    now = round(time.time(), 3)
    out = []
    for level, msg, fields in lines:
        if _LEVELS[level] < _min_level:
            continue
        out.append(orjson.dumps(_line(level, now, msg, fields), default=str))
    if out:
        sys.stdout.buffer.write(b"\n".join(out) + b"\n")
        sys.stdout.flush()


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route every log call of this process to the JSON sink, tagged with `service`."""
    global _service, _min_level
    _service = service
    _min_level = _LEVELS.get(level.lower(), 20)
    logger.remove()
    logger.add(_json_sink, level=level.upper(), backtrace=False, diagnose=False)


log = logger
__all__ = ["log", "setup_logging", "SECRET_KEYS"]
