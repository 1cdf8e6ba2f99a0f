"""CORS: which browser origins may call the ingress, and the headers that tell the browser so.

Pure: no I/O, no WSGI; ingress/app.py asks it for headers. CORS_ALLOWED_ORIGINS lists the
allowed origins, comma-separated, each exact (`https://app.example.com`: scheme, host, and the
port when not the default). Empty (the default): no origin is allowed, browsers cannot call the
API from another origin, and nothing of this module shows in a response. One form of wildcard
exists, for development only (`workers dev` sets it): `http://localhost:*` (also
`http://127.0.0.1:*`, `http://[::1]:*`, or https) is that loopback host on any port.

Requests carry bearer tokens, never cookies: `Access-Control-Allow-Credentials` is never sent,
and an allowed origin is echoed (never `*`) with `Vary: Origin`.

A refused preflight (an origin not in the list) is answered 403 with the usual JSON error
(`origin_not_allowed`), not 204: the browser fails the same way either way, but a 403 shows in
the request log's `error` and in spotter_http_requests_total{status="403"}, so an operator who
forgot an origin sees refused preflights instead of 204s that look like success.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from ingress.batch import Rejected

ENV = "CORS_ALLOWED_ORIGINS"
DEV_DEFAULT = "http://localhost:*,http://127.0.0.1:*"
MAX_AGE_S = 600  # how long a browser may reuse a preflight's answer (Chromium caps it at 7200)
# response headers a page's script may read besides the CORS-safelisted ones
EXPOSE_HEADERS = ("Retry-After", "WWW-Authenticate")
REFUSED = "origin_not_allowed"

_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_ORIGIN = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?$")
_ANY_PORT = re.compile(r"^(https?)://(localhost|127\.0\.0\.1|\[::1\]):\*$")


class Cors:
    """The allowed origins and the headers a response or a preflight gets for one."""

    def __init__(self, origins: Iterable[str] = ()):
        exact, any_port = set(), set()
        for entry in origins:
            entry = entry.strip().rstrip("/")
            if not entry:
                continue
            wildcard = _ANY_PORT.match(entry.lower())
            if wildcard:
                any_port.add((wildcard.group(1), wildcard.group(2)))
            else:
                exact.add(_canonical(entry))
        self.exact = frozenset(exact)
        self.any_port = frozenset(any_port)  # (scheme, loopback host)
        self._expose = ("Access-Control-Expose-Headers", ", ".join(EXPOSE_HEADERS))

    @property
    def enabled(self) -> bool:
        return bool(self.exact or self.any_port)

    def allows(self, origin: str | None) -> bool:
        if not origin or not self.enabled:
            return False
        if origin in self.exact:
            return True
        if not self.any_port or len(origin) > 40:
            return False
        m = _ORIGIN.match(origin)
        return bool(m and (m.group(1), m.group(2)) in self.any_port and _port_ok(m.group(3)))

    def response_headers(self, origin: str | None) -> tuple[tuple[str, str], ...]:
        """Headers for an actual (non-preflight) response: the CORS ones for an allowed origin, else none.

        Add them to every response, errors included, so that a page can read a 401's or a 429's
        JSON and its Retry-After.
        """
        if not origin or not self.allows(origin):
            return ()
        return (("Access-Control-Allow-Origin", origin), ("Vary", "Origin"), self._expose)

    def preflight(self, origin: str | None, method_requested: str | None, headers_requested: str | None,
                  allowed_methods: Iterable[str], allowed_headers: Iterable[str] = ()
                  ) -> tuple[int, tuple[tuple[str, str], ...]]:
        """The answer to OPTIONS on a route: (204, headers), no body; Rejected 403 for a refused origin.

        allowed_methods and allowed_headers are the route's (ingress/documents.py methods() and
        request_headers()). They are listed as they are, whatever was requested: the browser
        compares its Access-Control-Request-Method and -Headers with them itself, and fails a
        method or header the route does not take with a message that names it. So
        headers_requested changes nothing; it is taken so that the call reads like the request.

        - no Origin: a plain OPTIONS, not a preflight: 204 with Allow;
        - an origin not allowed: Rejected(403, origin_not_allowed), no Access-Control-Allow-Origin;
        - an allowed origin: 204 with Allow-Origin, Allow-Methods, Allow-Headers and Max-Age
          (with Allow instead of the last three when it asked no Access-Control-Request-Method:
          an OPTIONS a page sent itself, not a preflight).
        """
        methods = ", ".join(allowed_methods)
        allow = ("Allow", f"{methods}, OPTIONS" if methods else "OPTIONS")
        if not origin:
            return 204, (allow,)
        if not self.allows(origin):
            raise Rejected(403, REFUSED, f"origin {origin[:100]} is not in {ENV}" if self.enabled
                           else f"this API allows no browser origin ({ENV} is empty)",
                           headers=(("Vary", "Origin"),))
        if not method_requested:
            return 204, (("Access-Control-Allow-Origin", origin), ("Vary", "Origin"), self._expose, allow)
        return 204, (("Access-Control-Allow-Origin", origin), ("Vary", "Origin"),
                     ("Access-Control-Allow-Methods", methods),
                     ("Access-Control-Allow-Headers", ", ".join(allowed_headers)),
                     ("Access-Control-Max-Age", str(MAX_AGE_S)))


def _canonical(entry: str) -> str:
    """An origin as browsers send it (lower-case scheme and host, no default port), or ValueError."""
    lowered = entry.lower()
    m = _ORIGIN.match(lowered)
    if not m or not _port_ok(m.group(3)):
        if "*" in entry:
            raise ValueError(f"{ENV}: {entry!r}: a wildcard is only for a loopback host's port, "
                             f"as in http://localhost:* (development)")
        raise ValueError(f"{ENV}: {entry!r} is not an origin: scheme://host[:port], no path, "
                         f"e.g. https://app.example.com")
    scheme, host, port = m.groups()
    if port is None or (scheme, port) in (("http", "80"), ("https", "443")):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


def _port_ok(port: str | None) -> bool:
    return port is None or (port[0] != "0" and 1 <= int(port) <= 65535)
