"""Calling the ingress's WSGI App in this process, without gunicorn or a broker."""
from __future__ import annotations

from ingress.app import REQUEST_LOG, App


def call_app(app: App, method: str, path: str, **environ):
    """(status, headers, body) of one request; `environ` adds WSGI keys (HTTP_ORIGIN=…)."""
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", **environ},
                         start_response))
    REQUEST_LOG.flush()  # now, into this test's captured output, not at the interpreter's exit
    return answer["status"], answer["headers"], body
