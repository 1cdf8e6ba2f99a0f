"""One JSON object per line on stdout, with the fields DESIGN §7 names; secrets never written.

`setup_logging` makes it so for everything the process writes, not only our own calls: the
stdlib `logging` records of libraries (pika, botocore, yoyo, gevent, …; a `logger` field names
them), Python warnings, and an uncaught exception (one line with a `traceback` field).
Operator commands whose stdout is their answer (`workers token`, `status`, `dlq`, …) pass
`to_stderr=True`: the same JSON lines, on stderr, so `TOKEN=$(workers token …)` stays clean.
"""
from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
import traceback
import warnings

import orjson
from loguru import logger

from shared import process

# Keys whose values must never reach a log line, whatever a caller passes.
SECRET_KEYS = frozenset({"passcode", "password", "token", "access_token", "authorization",
                         "secret", "api_key", "jwt"})
_service = "spotter"
_to_stderr = False


def _stream():
    """Looked up on each write: a test's captured stdout, and setup_logging's choice, apply."""
    return sys.stderr if _to_stderr else sys.stdout


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
        line.update(exception_fields(exc.type, exc.value, exc.traceback))
    out = _stream()
    out.buffer.write(orjson.dumps(line, default=str) + b"\n")
    out.flush()


def exception_fields(exc_type, exc, tb) -> dict:
    """`exception` ("Type: message") and, when there is one, `traceback`: the frames only, in
    one field, so a crash is one line an operator can search, not thirty."""
    fields = {"exception": f"{getattr(exc_type, '__name__', exc_type)}: {exc}"}
    if tb is not None:  # one "file:line in function: source" per frame, innermost last
        fields["traceback"] = "\n".join(f"{f.filename}:{f.lineno} in {f.name}" + (f": {f.line}" if f.line else "")
                                        for f in traceback.extract_tb(tb))
    return fields


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
        stream = _stream()
        stream.buffer.write(b"\n".join(out) + b"\n")
        stream.flush()


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
                stream = _stream()
                stream.buffer.write(b"\n".join(lines) + b"\n")
                stream.flush()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.flush()
            except (OSError, ValueError):  # stdout closed while the process exits
                return


def level_name(levelno: int) -> str:
    """A stdlib level number as one of our level names (custom levels round down)."""
    for floor, name in ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO")):
        if levelno >= floor:
            return name
    return "DEBUG"


# pika retells one refused connection attempt seven times, at ERROR, from these internals;
# pika.adapters.blocking_connection still logs it once (with its traceback) and our own
# "broker unavailable, reconnecting" says when the next attempt comes.
_RETELLERS = ("pika.adapters.utils.connection_workflow", "pika.adapters.utils.io_services_utils")


def library_levels(level: str) -> dict[str, int]:
    """Logger name ("" is the root) → level, for the stdlib loggers libraries write to.

    Libraries log from WARNING up (their INFO is per-connection chatter); LOG_LEVEL=DEBUG
    opens everything up."""
    if level.upper() == "DEBUG":
        return {"": logging.DEBUG, **{name: logging.NOTSET for name in _RETELLERS}}
    return {"": logging.WARNING, **{name: logging.CRITICAL for name in _RETELLERS}}


class InterceptHandler(logging.Handler):
    """A stdlib `logging` record as one of our JSON lines; its logger's name in `logger`."""

    def __init__(self, **fields):
        super().__init__()
        self.fields = fields  # e.g. component="gunicorn"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string: its parts, not logging's raw error text
            message = f"{record.msg!r} % {record.args!r}"
        exc_info = record.exc_info if record.exc_info and record.exc_info[0] else None
        try:
            logger.opt(exception=exc_info).bind(logger=record.name, **self.fields).log(
                level_name(record.levelno), message)
        except Exception:
            pass  # never logging's "--- Logging error ---" text on stderr


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning: a warning as a JSON line instead of two lines of text on stderr."""
    logger.bind(logger="py.warnings", category=getattr(category, "__name__", str(category)),
                source=f"{filename}:{lineno}").warning(str(message))


def _uncaught(exc_type, exc, tb) -> None:
    logger.opt(exception=(exc_type, exc, tb)).bind(logger="excepthook").critical("uncaught exception")


def _uncaught_in_thread(args) -> None:
    if args.exc_type is SystemExit:
        return  # what threading's own hook does
    logger.opt(exception=(args.exc_type, args.exc_value, args.exc_traceback)).bind(
        logger="excepthook", thread=getattr(args.thread, "name", None)).critical("uncaught exception in thread")


def _capture_everything(level: str) -> None:
    """Library records, warnings and uncaught exceptions into the JSON sink (idempotent)."""
    logging.getLogger().handlers = [InterceptHandler()]
    for name, number in library_levels(level).items():
        logging.getLogger(name).setLevel(number)
    logging.raiseExceptions = False  # a failing handler must not print its own traceback
    warnings.showwarning = _show_warning
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread


def setup_logging(service: str, level: str = "INFO", to_stderr: bool = False) -> None:
    """Route everything this process logs to the JSON sink, tagged with `service`: on stdout,
    or on stderr for a command whose stdout is its answer."""
    global _service, _min_level, _to_stderr
    _service, _to_stderr = service, to_stderr
    _min_level = _LEVELS.get(level.lower(), 20)
    logger.remove()
    logger.add(_json_sink, level=level.upper(), backtrace=False, diagnose=False)
    _capture_everything(level)


log = logger
__all__ = ["log", "setup_logging", "InterceptHandler", "SECRET_KEYS"]
