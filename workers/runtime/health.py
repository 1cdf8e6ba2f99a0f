"""A worker's health and metrics endpoints (DESIGN §7), on their own port beside the consumer.

    GET /livez    200 while the consume loop turns (a reconnect wait counts) and the processing
                  thread lives; else 503. A broker or database outage never fails it: restarting
                  the pod would not bring either back.
    GET /readyz   200 while the worker holds an open broker channel (and its query consumer one,
                  if it answers queries) and its database answers SELECT 1; else 503 with
                  {"status": "unavailable", "checks": {"broker": …, "database": …}}.
    GET /metrics  Prometheus text (workers/runtime/metrics.py).

HEALTH_PORT (default 8081; 0 picks a free port, logged as `health_port`), LIVENESS_STALE_S (60).
In Kubernetes:

    livenessProbe:  {httpGet: {path: /livez, port: 8081}, periodSeconds: 10, failureThreshold: 3}
    readinessProbe: {httpGet: {path: /readyz, port: 8081}, periodSeconds: 5, failureThreshold: 2}

and Prometheus scrapes each worker pod on that port, path /metrics (the ingress serves /metrics
on its own PORT), e.g. for pods annotated prometheus.io/scrape: "true", prometheus.io/port:
"8081" (the ingress: its PORT):

    - job_name: spotter
      kubernetes_sd_configs: [{role: pod}]
      relabel_configs:
        - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: "true", action: keep}
        - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
          regex: '([^:]+)(?::\\d+)?;(\\d+)'
          replacement: '$1:$2'
          target_label: __address__

Bodies never carry a URL: database URLs hold passwords.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import orjson
import psycopg2
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from shared.errors import describe  # libpq's first line: host and port, never the password

# (healthy, body) of one check
Check = Callable[[], "tuple[bool, dict]"]


class DatabaseCheck:
    """SELECT 1 on a short-lived connection, its answer kept ~1 s so probes do not hammer."""

    def __init__(self, url: str, application_name: str, timeout_s: int = 2, cache_s: float = 1.0):
        self.url, self.application_name = url, application_name
        self.timeout_s, self.cache_s = timeout_s, cache_s
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._result: tuple[bool, str] = (False, "not checked")

    def __call__(self) -> tuple[bool, str]:
        with self._lock:  # a second probe waits for the first one's answer instead of connecting too
            if time.monotonic() - self._checked_at >= self.cache_s:
                self._result = self._check()
                self._checked_at = time.monotonic()
            return self._result

    def _check(self) -> tuple[bool, str]:
        try:
            conn = psycopg2.connect(self.url, connect_timeout=self.timeout_s,
                                    application_name=self.application_name,
                                    options=f"-c statement_timeout={self.timeout_s * 1000}")
        except Exception as exc:
            return False, describe(exc)[:200]
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            return True, "ok"
        except Exception as exc:
            return False, describe(exc)[:200]
        finally:
            conn.close()


class HealthServer:
    """/livez, /readyz and /metrics on a ThreadingHTTPServer in a daemon thread."""

    def __init__(self, port: int, live: Check, ready: Check, registry: CollectorRegistry, host: str = "0.0.0.0"):
        self.live, self.ready, self.registry = live, ready, registry
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> "HealthServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="health", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def answer(self, path: str, accept: str | None = None) -> tuple[int, str, bytes]:
        if path == "/metrics":  # Prometheus text, or OpenMetrics if the scraper asks for it
            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(self.registry)
        check = {"/livez": self.live, "/readyz": self.ready}.get(path)
        if check is None:
            return 404, "application/json", orjson.dumps({"error": "not_found", "routes": ["/livez", "/readyz",
                                                                                           "/metrics"]})
        healthy, body = check()
        return (200 if healthy else 503), "application/json", orjson.dumps(body)


def _handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                code, content_type, body = server.answer(self.path.split("?", 1)[0], self.headers.get("Accept"))
            except Exception as exc:  # a probe must get an answer, not a hung socket
                code, content_type = 500, "application/json"
                body = orjson.dumps({"status": "error", "error": type(exc).__name__})
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line each
            pass

    return Handler
