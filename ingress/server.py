"""gunicorn's own output in the ingress's formats: its refusals as JSON, its log lines as JSON.

gunicorn refuses some requests before the app sees them (a request line over 4 KiB, too many or
too large headers, malformed HTTP) with an HTML page, and logs in its own plain-text format on
stderr. Clients get the `{"error", "detail"}` body every other refusal has, and operators one
JSON object per line on stdout (DESIGN §7). ingress/gunicorn_conf.py wires both in.
"""
from __future__ import annotations

import orjson
from gunicorn import glogging, util

from shared.logging import InterceptHandler, setup_logging

_ERRORS = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
           431: "headers_too_large", 500: "internal_error", 501: "not_implemented"}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error's answer (the connection closes after it), with a JSON body."""
    body = orjson.dumps({"error": _ERRORS.get(status_int, "bad_request"), "detail": (mesg or reason)[:300]})
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def answer_errors_in_json() -> None:
    # gunicorn's workers call util.write_error through the module: replacing it is the one hook
    util.write_error = write_json_error


class JsonLogger(glogging.Logger):
    """gunicorn's error log (start, stop, worker timeouts, refused requests) as our JSON lines."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        setup_logging("ingress", cfg.loglevel)
        # gunicorn.error (arbiter, workers) and gunicorn.access do not propagate: their own handler
        for own in (self.error_log, self.access_log):
            own.handlers = [InterceptHandler(component="gunicorn")]
