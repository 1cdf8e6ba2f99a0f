"""One JSON object per line on stdout, with the fields DESIGN §7 names; secrets never written."""
from __future__ import annotations

import sys

import orjson
from loguru import logger

# Keys whose values must never reach a log line, whatever a caller passes.
SECRET_KEYS = frozenset({"passcode", "password", "token", "access_token", "authorization",
                         "secret", "api_key", "jwt"})
_service = "spotter"


def _json_sink(message) -> None:
    record = message.record
    line = {
        "level": record["level"].name.lower(),
        "ts": round(record["time"].timestamp(), 3),
        "service": _service,
        "msg": record["message"],
    }
    for key, value in record["extra"].items():
        line[key] = "[redacted]" if key.lower() in SECRET_KEYS else value
    if record["exception"] is not None:
        exc = record["exception"]
        line["exception"] = f"{exc.type.__name__}: {exc.value}"
    sys.stdout.buffer.write(orjson.dumps(line, default=str) + b"\n")
    sys.stdout.flush()


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route every log call of this process to the JSON sink, tagged with `service`."""
    global _service
    _service = service
    logger.remove()
    logger.add(_json_sink, level=level.upper(), backtrace=False, diagnose=False)


log = logger
__all__ = ["log", "setup_logging", "SECRET_KEYS"]
