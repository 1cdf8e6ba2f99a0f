"""The ingress's Prometheus metrics, served on GET /metrics of its own PORT.

Gunicorn runs several worker processes; a scrape lands on one of them, so the numbers must be
every process's together. prometheus_client's multiprocess mode does that: each process writes
its values to files in PROMETHEUS_MULTIPROC_DIR (ingress/gunicorn_conf.py sets a fresh one per
master when unset) and a scrape adds them up. The variable must be set before prometheus_client
is first imported, which gunicorn_conf.py does in the master, before any fork. Without it (an App
built in a plain process) the process's own registry is served.

Labels stay bounded: `route` is the route template ("/api/v1/videos/{video_id}/complete"), or
"unmatched"; `method` one of the HTTP methods, or "other". Only counters and histograms: in
multiprocess mode they need no per-process gauge bookkeeping.

Put /metrics behind the cluster (a scrape config reaches the pod; the public Ingress should not
route it).
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.exposition import choose_encoder

from shared import process

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Every increment checks for a fork by asking the process id: a system call each time with
    # the default os.getpid (three a request). Before any metric below exists.
    values.ValueClass = values.MultiProcessValue(process_identifier=process.pid)

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("spotter_http_requests", "HTTP requests answered, by route template, method and status",
                   ("route", "method", "status"), registry=REGISTRY)
PUBLISH_SECONDS = Histogram("spotter_publish_seconds", "Seconds from publishing one message to the broker's "
                            "confirm (per message; unroutable returns included, failures are not)",
                            registry=REGISTRY,
                            buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
PUBLISH_FAILURES = Counter("spotter_publish_failures", "Messages the broker did not take, by reason (nack, "
                           "unroutable, timeout, broker_unavailable)", ("reason",), registry=REGISTRY)

_requests: dict[tuple[str, str, int], object] = {}  # children, looked up without prometheus_client's lock
_failures: dict[str, object] = {}


def count_request(route: str, method: str, status: int) -> None:
    if method not in _METHODS:
        method = "other"
    key = (route, method, status)
    child = _requests.get(key)
    if child is None:
        child = _requests[key] = REQUESTS.labels(route, method, str(status))
    child.inc()


def count_failures(reason: str, n: int = 1) -> None:
    child = _failures.get(reason)
    if child is None:
        child = _failures[reason] = PUBLISH_FAILURES.labels(reason)
    child.inc(n)


def observe_publish(seconds: float) -> None:
    PUBLISH_SECONDS.observe(seconds)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of a scrape, in the format the Accept header asks for (Prometheus
    text, or OpenMetrics): every gunicorn worker's values together."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
