"""A worker process's Prometheus metrics (DESIGN §7), served on /metrics by workers/runtime/health.py.

One registry per process. Labels stay bounded: `event_type` is one of the worker's handler
table or "unknown", `query` one of its query table or "unknown". The consumer counts per batch
(`inc(n)`), never per message, so the hot path stays cheap.
"""
from __future__ import annotations

from collections import Counter as Tally
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

UNKNOWN = "unknown"

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # memory, CPU, open files of the worker process

CONSUMED = Counter("spotter_messages_consumed", "Messages received from the worker's queue and handed to "
                   "processing (a redelivery counts again)", ("worker", "event_type"), registry=REGISTRY)
ACKED = Counter("spotter_messages_acked", "Messages acked on the channel (counted once the ack is sent)",
                ("worker", "event_type"), registry=REGISTRY)
PROCESSED = Counter("spotter_messages_processed", "Messages whose handler's work was committed",
                    ("worker", "event_type"), registry=REGISTRY)
RETRIED = Counter("spotter_messages_retried", "Messages republished to a delay queue for another attempt",
                  ("worker", "event_type"), registry=REGISTRY)
DEAD_LETTERED = Counter("spotter_messages_dead_lettered", "Messages republished to the dead-letter queue, by "
                        "reason", ("worker", "event_type", "reason"), registry=REGISTRY)
DUPLICATES = Counter("spotter_duplicates_skipped", "Messages skipped because their idempotency key was "
                     "already claimed with the same user and payload", ("worker", "event_type"), registry=REGISTRY)
PROCESSING = Histogram("spotter_processing_seconds", "Seconds to process one batch of deliveries (observed per "
                       "batch, not per message): database work, outbox publish, forwarding retries and dead "
                       "letters; a batch held through a database outage counts its wait",
                       ("worker",), registry=REGISTRY,
                       buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
IN_FLIGHT = Gauge("spotter_messages_in_flight", "Messages delivered to this worker and not yet acked or requeued",
                  ("worker",), registry=REGISTRY)
OUTBOX_BACKLOG = Gauge("spotter_outbox_backlog", "Outcome events committed but not yet published (outbox rows), "
                       "refreshed on the outbox relay interval", ("worker",), registry=REGISTRY)
QUERIES = Counter("spotter_queries", "Queries answered off the worker's query queue, by status (ok, or the "
                  "error the caller was told)", ("worker", "query", "status"), registry=REGISTRY)

PASSCODE_LOCKOUTS = Counter("spotter_passcode_lockouts", "Feeds (scope=feed) or viewers (scope=viewer) that reached "
                            "their cap of wrong passcodes for the window", ("worker", "scope"), registry=REGISTRY)

class WorkerMetrics:
    """The children of one worker's metrics, looked up once: a batch costs a few dict reads."""

    def __init__(self, worker: str, event_types: Iterable[str], queries: Iterable[str] = ()):
        self.worker = worker
        self.event_types = frozenset(event_types)
        self.query_names = frozenset(queries)
        self._children: dict[tuple, object] = {}
        for event_type in (*sorted(self.event_types), UNKNOWN):  # present at 0 from the start
            for metric in (CONSUMED, ACKED, PROCESSED, RETRIED, DUPLICATES):
                self._child(metric, event_type)
        self.processing = PROCESSING.labels(worker)
        self.in_flight = IN_FLIGHT.labels(worker)
        self.outbox_backlog = OUTBOX_BACKLOG.labels(worker)

    def event_type(self, name: str | None) -> str:
        return name if name in self.event_types else UNKNOWN

    def query(self, name: str | None) -> str:
        return name if name in self.query_names else UNKNOWN

    def count(self, metric: Counter, tally: Tally | dict, *labels: str) -> None:
        """Add a tally {event_type: n} to a per-event-type counter."""
        for event_type, n in tally.items():
            if n:
                self._child(metric, event_type, *labels).inc(n)

    def count_query(self, name: str, status: str) -> None:
        self._child(QUERIES, self.query(name), status).inc()

    def _child(self, metric, *labels: str):
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.worker, *labels)
        return child
