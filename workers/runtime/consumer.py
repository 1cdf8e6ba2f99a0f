"""A worker, wired (DESIGN §4): the one place that puts the runtime's parts together.

    I/O thread         workers/runtime/consume_loop.py  deliveries in, batches out, settlements applied
    processing thread  workers/runtime/pipeline.py      a batch committed, forwarded, answered, settled
    queries thread     workers/runtime/queries.py       answers off W.queries (only if the worker has queries)
    health thread      workers/runtime/health.py        /livez, /readyz, /metrics on HEALTH_PORT

They share one `stopping` event; the loop hands batches over a one-slot queue and the pipeline
hands settlements back through the loop's `settle`, which is safe from any thread.
"""
from __future__ import annotations

import signal
import threading
import time

from workers.runtime import receipts
from shared.config import Config
from workers.runtime.consume_loop import ConsumeLoop
from workers.runtime.handler import WorkerSpec
from workers.runtime.health import DatabaseCheck, HealthServer
from shared.logging import log
from workers.runtime.metrics import REGISTRY, WorkerMetrics
from workers.runtime.pipeline import Pipeline
from workers.runtime.processor import BatchProcessor
from workers.runtime.publisher import BatchPublisher
from workers.runtime.queries import QueryServer


class Consumer:
    def __init__(self, spec: WorkerSpec, config: Config, db_url: str):
        spec = receipts.with_receipts(spec)  # every worker answers <worker>.receipts
        self.spec, self.config = spec, config
        self.stopping = threading.Event()
        self.metrics = WorkerMetrics(spec.name, spec.handlers, spec.queries)
        self.processor = processor = BatchProcessor(spec, db_url, config.max_clock_skew_s)
        prefetch = spec.prefetch or config.prefetch
        # the rest of the prefetch streams in while a batch is processed
        max_batch = spec.max_batch or max(1, prefetch // 2)
        self.loop = ConsumeLoop(spec.name, config, spec.handlers.keys(), prefetch, max_batch, processor.parse,
                                self.metrics, self.stopping)
        publisher = BatchPublisher(config.rabbitmq_url, f"worker-{spec.name}-publisher", config.heartbeat_s)
        self.pipeline = Pipeline(spec, config, processor, publisher, self.metrics, self.stopping)
        self.queries = QueryServer(spec, config, db_url, self.metrics) if spec.queries else None
        self._processor_thread: threading.Thread | None = None
        self._background: threading.Thread | None = None
        if spec.background is not None:
            self._background = threading.Thread(target=spec.background, args=(config, db_url, self.stopping),
                                                name=f"{spec.name}-background", daemon=True)
        self._database_check = DatabaseCheck(db_url, f"worker-{spec.name}-health")

    def run(self) -> None:
        """Until SIGTERM (or stop()): drain what is held, then close everything."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        self._processor_thread = threading.Thread(
            target=self.pipeline.run, args=(self.loop.batches, self.loop.idle, self.loop.settle),
            name="processor", daemon=True)
        self._processor_thread.start()
        if self.queries is not None:
            self.queries.start()
        if self._background is not None:
            self._background.start()
        health = self._start_health()
        log.info("worker starting", worker=self.spec.name, handlers=sorted(self.spec.handlers),
                 queue=self.loop.queue, bindings=sorted(self.spec.handlers), prefetch=self.loop.prefetch,
                 max_batch=self.loop.max_batch, health_port=health.port if health else None)
        try:
            self.loop.serve()
        finally:
            self.stopping.set()
            self._processor_thread.join(timeout=self.config.drain_timeout_s)
            if self.queries is not None:
                self.queries.stop()
            if self._background is not None:
                self._background.join(timeout=self.config.drain_timeout_s)
            self.processor.close()
            self.pipeline.publisher.close()
            if health is not None:
                health.stop()
            log.info("worker stopped", worker=self.spec.name)

    def stop(self) -> None:
        self.stopping.set()

    def consuming(self) -> bool:
        """Consuming its queue, and answering its queries if it has any."""
        return self.loop.consuming() and (self.queries is None or self.queries.consuming())

    # ---- health (workers/runtime/health.py) --------------------------------------------------------
    def _start_health(self) -> HealthServer | None:
        try:
            server = HealthServer(self.config.health_port, self._live, self._ready, REGISTRY).start()
        except OSError as exc:  # the port is taken (several workers on one host): run without probes
            log.error("health server could not listen; set HEALTH_PORT", worker=self.spec.name,
                      health_port=self.config.health_port, error=str(exc))
            return None
        log.info("health listening", worker=self.spec.name, health_port=server.port)
        return server

    def _live(self) -> tuple[bool, dict]:
        """The consume loop turns (a reconnect wait counts: an outage is readiness's business), and
        the processing thread and the worker's background thread, if it has one, live."""
        age = time.monotonic() - self.loop.turned
        loop_ok = age < self.config.liveness_stale_s
        thread = self._processor_thread
        processor_ok = thread is not None and thread.is_alive()
        checks = {"consume_loop": "ok" if loop_ok else f"stale: last turned {age:.0f}s ago",
                  "processor": "ok" if processor_ok else "not running"}
        healthy = loop_ok and processor_ok
        if self._background is not None:
            background_ok = self._background.is_alive()
            checks["background"] = "ok" if background_ok else "not running"
            healthy = healthy and background_ok
        return healthy, {"status": "ok" if healthy else "unhealthy", "worker": self.spec.name, "checks": checks}

    def _ready(self) -> tuple[bool, dict]:
        """An open channel to consume on (and to answer queries on) and a database that answers."""
        broker_ok = self.loop.consuming()
        broker_state = "ok" if broker_ok else "no open channel"
        if broker_ok and self.queries is not None and not self.queries.consuming():
            broker_ok, broker_state = False, "query consumer has no open channel"
        database_ok, database_state = self._database_check()
        ready = broker_ok and database_ok
        return ready, {"status": "ok" if ready else "unavailable", "worker": self.spec.name,
                       "checks": {"broker": broker_state, "database": database_state}}
