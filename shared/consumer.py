"""The consumer runtime every worker runs on (DESIGN §4).

Two threads. The I/O thread owns the consuming connection: it receives deliveries, hands them
to the processing thread in batches and settles (acks) them; it keeps calling into pika, so
heartbeats flow however long a handler runs. The processing thread owns the database
connection and a publishing connection: it commits a batch, publishes its outbox, republishes
retries and dead letters, then asks the I/O thread (add_callback_threadsafe) to ack.

A third, shared/health.py's server, answers /livez, /readyz and /metrics on HEALTH_PORT.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from collections import Counter as Tally
from datetime import datetime, timezone
from functools import partial

import orjson
import pika

from shared import broker, outbox, receipts, topology
from shared.backoff import Backoff
from shared.config import Config
from shared.errors import describe, public_detail
from shared.handler import WorkerSpec
from shared.health import DatabaseCheck, HealthServer
from shared.logging import log, write_lines
from shared.metrics import ACKED, CONSUMED, DEAD_LETTERED, DUPLICATES, PROCESSED as PROCESSED_TOTAL, REGISTRY, \
    RETRIED, WorkerMetrics
from shared.processor import DEAD, DUPLICATE, PROCESSED, RETRY, BatchProcessor, DatabaseUnavailable, Delivery, Verdict
from shared.publisher import BatchPublisher, Message
from shared.queries import QueryServer

_OUTCOME_MSG = {PROCESSED: "event processed", DUPLICATE: "duplicate skipped",
                RETRY: "event retried", DEAD: "event dead-lettered"}


class Consumer:
    def __init__(self, spec: WorkerSpec, config: Config, db_url: str):
        spec = receipts.with_receipts(spec)  # every worker answers <worker>.receipts
        self.spec, self.config, self.db_url = spec, config, db_url
        self.names = topology.QueueNames(spec.name)
        self.processor = BatchProcessor(spec, db_url, config.max_clock_skew_s)
        self.publisher = BatchPublisher(config.rabbitmq_url, f"worker-{spec.name}-publisher", config.heartbeat_s)
        self.prefetch = spec.prefetch or config.prefetch
        # the rest of the prefetch streams in while a batch is processed
        self.max_batch = spec.max_batch or max(1, self.prefetch // 2)
        self.stopping = threading.Event()
        self._pending: list[Delivery] = []
        self._idle = threading.Event()
        self._idle.set()
        self._inbox: queue.Queue = queue.Queue(maxsize=1)
        self._connection = None
        self._channel = None
        self._generation = 0
        # health and metrics: read by the health server's threads, written by their owners
        self.metrics = WorkerMetrics(spec.name, spec.handlers, spec.queries)
        self._in_flight = 0  # I/O thread: delivered on the current channel, not yet settled
        self.metrics.in_flight.set_function(lambda: self._in_flight)
        self._turned = time.monotonic()  # I/O thread: when its loop last turned (/livez)
        self._processor_thread: threading.Thread | None = None
        self._queries: QueryServer | None = None
        self._database_check = DatabaseCheck(db_url, f"worker-{spec.name}-health")

    # ---- public -------------------------------------------------------------------------
    def run(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        worker_thread = self._processor_thread = threading.Thread(target=self._process_loop, name="processor",
                                                                  daemon=True)
        worker_thread.start()
        queries = self._queries = QueryServer(self.spec, self.config, self.db_url, self.metrics).start() \
            if self.spec.queries else None
        health = self._start_health()
        log.info("worker starting", worker=self.spec.name, handlers=sorted(self.spec.handlers),
                 queue=self.names.main, bindings=sorted(self.spec.handlers), prefetch=self.prefetch,
                 max_batch=self.max_batch, health_port=health.port if health else None)
        try:
            self._serve(worker_thread, queries)
        finally:
            if health is not None:
                health.stop()

    def _serve(self, worker_thread: threading.Thread, queries: QueryServer | None) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                self._consume(backoff)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 406:  # PRECONDITION_FAILED: our queue exists with other arguments
                    raise
                self.stop()
                self._inbox.put(None)
                raise topology.TopologyMismatch(
                    f"queue {self.names.main!r} exists with arguments that break our guarantees "
                    f"(want quorum, x-delivery-limit={self.config.delivery_limit}, dead-letter to "
                    f"{topology.DEAD_EXCHANGE}, at-least-once): {exc.reply_text}") from None
            except broker.CONNECTION_ERRORS as exc:
                self._pending.clear()  # unacked: the broker redelivers them to someone
                delay = backoff.next()
                log.warning("broker unavailable, reconnecting", worker=self.spec.name,
                            error=f"{type(exc).__name__}: {exc}", retry_in_s=round(delay, 2),
                            attempt=backoff.attempts)
                self._wait(delay)
        self._inbox.put(None)
        worker_thread.join(timeout=self.config.drain_timeout_s)
        if queries is not None:
            queries.stop()
        self.processor.close()
        self.publisher.close()
        log.info("worker stopped", worker=self.spec.name)

    def stop(self) -> None:
        self.stopping.set()

    # ---- health (shared/health.py) --------------------------------------------------------
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
        """The consume loop turns (a reconnect wait counts: an outage is readiness's business) and
        the processing thread lives."""
        age = time.monotonic() - self._turned
        loop_ok = age < self.config.liveness_stale_s
        thread = self._processor_thread
        processor_ok = thread is not None and thread.is_alive()
        healthy = loop_ok and processor_ok
        return healthy, {"status": "ok" if healthy else "unhealthy", "worker": self.spec.name, "checks": {
            "consume_loop": "ok" if loop_ok else f"stale: last turned {age:.0f}s ago",
            "processor": "ok" if processor_ok else "not running"}}

    def _ready(self) -> tuple[bool, dict]:
        """An open channel to consume on (and to answer queries on) and a database that answers."""
        channel = self._channel
        broker_ok = channel is not None and channel.is_open
        broker_state = "ok" if broker_ok else "no open channel"
        if broker_ok and self._queries is not None and not self._queries.consuming():
            broker_ok, broker_state = False, "query consumer has no open channel"
        database_ok, database_state = self._database_check()
        ready = broker_ok and database_ok
        return ready, {"status": "ok" if ready else "unavailable", "worker": self.spec.name,
                       "checks": {"broker": broker_state, "database": database_state}}

    def _wait(self, delay: float) -> None:
        """Sit out a reconnect delay, turning as we go: waiting for the broker is not hanging."""
        deadline = time.monotonic() + delay
        while not self.stopping.is_set():
            self._turned = now = time.monotonic()
            if now >= deadline:
                return
            self.stopping.wait(min(deadline - now, 1.0))

    # ---- I/O thread ---------------------------------------------------------------------
    def _consume(self, backoff: Backoff) -> None:
        params = broker.parameters(self.config.rabbitmq_url, self.config.heartbeat_s,
                                   client_name=f"worker-{self.spec.name}")
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            topology.declare_worker(channel, self.spec.name, self.spec.handlers.keys(), self.config.exchange,
                                    self.config.delivery_limit, self.config.retry_delays_s)
            channel.basic_qos(prefetch_count=self.prefetch)
            self._generation += 1
            self._connection, self._channel = connection, channel
            tag = channel.basic_consume(self.names.main, partial(self._on_message, self._generation))
            backoff.reset()
            log.info("consuming", worker=self.spec.name, queue=self.names.main)
            while not self.stopping.is_set():
                self._turned = time.monotonic()
                connection.process_data_events(time_limit=0 if self._pending and self._idle.is_set() else 0.2)
                self._dispatch()
            channel.basic_cancel(tag)  # no new deliveries; finish what we hold
            deadline = time.monotonic() + self.config.drain_timeout_s
            while (self._pending or not self._idle.is_set()) and time.monotonic() < deadline:
                self._turned = time.monotonic()
                connection.process_data_events(time_limit=0.1)
                self._dispatch()
        finally:
            self._channel = None
            self._in_flight = 0  # the broker requeues whatever this channel held
            if connection.is_open:
                try:
                    connection.close()
                except Exception:
                    pass

    def _on_message(self, generation, _channel, method, properties, body) -> None:
        self._in_flight += 1
        delivery = Delivery(method.delivery_tag, body, properties, method.routing_key, generation,
                            self.metrics.event_type(properties.type or method.routing_key))
        # parsed here, on the I/O thread, while the processing thread mostly waits on the database
        # with the GIL released: the two overlap instead of taking turns
        try:
            delivery.parsed = self.processor.parse(delivery)
        except Exception:
            pass  # the processing thread parses it again and reports what went wrong
        self._pending.append(delivery)

    def _dispatch(self) -> None:
        if self._pending and self._idle.is_set():
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            self._idle.clear()
            self._inbox.put(batch)

    def _settle(self, generation: int, ack_upto: int | None, acks: list[int], requeue: list[int],
                acked: Tally, settled: int) -> None:
        channel = self._channel
        if channel is None or generation != self._generation or not channel.is_open:
            return  # that channel is gone; the broker has requeued its unacked messages
        for tag in requeue:
            channel.basic_nack(tag, requeue=True)
        if ack_upto is not None:
            channel.basic_ack(ack_upto, multiple=True)
        for tag in acks:
            channel.basic_ack(tag)
        self._in_flight -= settled
        self.metrics.count(ACKED, acked)

    # ---- processing thread ----------------------------------------------------------------
    def _process_loop(self) -> None:
        next_relay = 0.0
        while True:
            try:
                batch = self._inbox.get(timeout=1.0)
            except queue.Empty:
                batch = ()
            if batch is None:
                return
            try:
                if batch:
                    self._handle(batch)
                if time.monotonic() >= next_relay and not self.stopping.is_set():
                    next_relay = time.monotonic() + self.config.outbox_relay_interval_s
                    self._relay()
                self.publisher.keepalive()
            except Exception:
                log.exception("processing loop error", worker=self.spec.name)
            finally:
                if batch:
                    self._idle.set()

    def _handle(self, batch: list[Delivery]) -> None:
        started = time.perf_counter()
        types = Tally(d.event_type for d in batch)
        self.metrics.count(CONSUMED, types)
        backoff = Backoff()
        while True:
            try:
                verdicts, written = self.processor.process(batch)
                break
            except DatabaseUnavailable as exc:
                if self.stopping.is_set():
                    return  # leave them unacked: redelivered after restart
                delay = backoff.next()
                log.warning("database unavailable, holding batch", worker=self.spec.name, batch=len(batch),
                            error=str(exc)[:200], retry_in_s=round(delay, 2), attempt=backoff.attempts)
                self.stopping.wait(delay)
        duration_ms = round((time.perf_counter() - started) * 1000 / len(batch), 3)
        try:
            outbox.publish_written(self.processor.connection(), self.publisher, self.config.exchange,
                                   written, self.spec.name)
        except Exception as exc:  # committed: the relay publishes these rows later
            log.warning("outbox publish failed, relay will retry", worker=self.spec.name,
                        events=len(written), error=f"{type(exc).__name__}: {exc}")
        failing = [v for v in verdicts if v.outcome in (RETRY, DEAD)]  # none on the happy path
        for v in failing:
            self._decide(v)
        if failing and not self._record_rejections(batch, failing):
            return
        unforwarded = self._forward_failures(failing)
        self._send_replies(verdicts)
        self._log(verdicts, duration_ms)
        self._count(verdicts, unforwarded)
        self._request_settle(batch, unforwarded, types)
        self.metrics.processing.observe(time.perf_counter() - started)

    def _decide(self, verdict: Verdict) -> None:
        """A failure's final outcome: retried, or dead-lettered (its retries exhausted, or
        permanent) with its reason and the detail its sender may read."""
        exc = verdict.error
        if verdict.outcome == RETRY and verdict.delivery.attempt >= self.config.max_attempts:
            verdict.outcome, verdict.reason = DEAD, getattr(exc, "exhausted_reason", "retries_exhausted")
        elif verdict.outcome == DEAD:
            verdict.reason = getattr(exc, "reason", None) or "rejected_by_database"
        if verdict.outcome == DEAD:
            verdict.detail = public_detail(exc, verdict.reason)

    def _record_rejections(self, batch: list[Delivery], verdicts: list[Verdict]) -> bool:
        """Record what the batch dead-letters (shared/receipts.py) before anything is acked, so a
        crash redelivers and records again. Database unreachable: the batch is held (unacked) and
        retried with backoff, as for its own work; nothing is dead-lettered without its receipt.
        False when stopping meanwhile: the batch is requeued. Any other failure to record is
        logged and the messages are dead-lettered without receipts (pending for the sender)."""
        rejections = []
        for v in verdicts:
            if v.outcome == DEAD:
                props = v.delivery.properties
                r = receipts.rejection(v.event, v.delivery.body, props.type or v.delivery.routing_key, v.reason,
                                       getattr(v.error, "field", None), v.detail)
                if r is not None:
                    rejections.append(r)
        if not rejections:
            return True
        backoff = Backoff()
        while True:
            try:
                written = self.processor.record_rejections(rejections)
                break
            except DatabaseUnavailable as exc:
                if self.stopping.is_set():
                    self._request_settle(batch, {d.tag for d in batch}, Tally())
                    return False
                delay = backoff.next()
                log.warning("database unavailable, holding dead letters until their rejections are recorded",
                            worker=self.spec.name, batch=len(batch), rejections=len(rejections),
                            error=str(exc)[:200], retry_in_s=round(delay, 2), attempt=backoff.attempts)
                self.stopping.wait(delay)
            except Exception as exc:
                log.error("could not record rejections; dead-lettering without receipts", worker=self.spec.name,
                          rejections=len(rejections), error=describe(exc)[:300])
                return True
        try:
            outbox.publish_written(self.processor.connection(), self.publisher, self.config.exchange,
                                   written, self.spec.name)
        except Exception as exc:  # committed: the relay publishes these rows later
            log.warning("outbox publish failed, relay will retry", worker=self.spec.name,
                        events=len(written), error=f"{type(exc).__name__}: {exc}")
        return True

    def _forward_failures(self, failing: list[Verdict]) -> set[int]:
        """Republish decided failures: retries to their delay queue, dead letters to W.dead.

        Returns the tags the broker did not take: those must not be acked."""
        if not failing:
            return set()
        try:
            self.publisher.publish([self._retry_or_dead(v) for v in failing])
            return set()
        except Exception as exc:
            log.error("could not forward failed messages; they will be redelivered", worker=self.spec.name,
                      count=len(failing), error=f"{type(exc).__name__}: {exc}")
            return {v.delivery.tag for v in failing}

    def _send_replies(self, verdicts: list[Verdict]) -> None:
        """Answer request–reply callers (DESIGN §1); a lost answer only makes the caller wait it out."""
        messages = []
        for v in verdicts:
            props = v.delivery.properties
            if not props.reply_to or v.outcome == RETRY:
                continue
            if v.outcome == PROCESSED:
                body = {"status": "ok", **(v.reply or {})}
            elif v.outcome == DUPLICATE:
                body = {"status": "duplicate"}
            else:
                reason = v.reason or getattr(v.error, "reason", "failed")
                body = {"status": "error", "error": reason,
                        "detail": (v.detail or public_detail(v.error, reason))[:300],
                        "field": getattr(v.error, "field", None)}
            messages.append(Message("", props.reply_to, orjson.dumps(body), pika.BasicProperties(
                content_type="application/json", correlation_id=props.correlation_id, delivery_mode=1)))
        if messages:
            try:
                self.publisher.publish(messages)
            except Exception as exc:
                log.warning("could not send replies", worker=self.spec.name, error=f"{type(exc).__name__}: {exc}")

    def _retry_or_dead(self, verdict: Verdict) -> Message:
        """The message that forwards a decided failure (_decide): to its delay queue or W.dead."""
        d, exc = verdict.delivery, verdict.error
        attempt = d.attempt
        headers = dict(d.properties.headers or {})
        headers.update({"x-attempts": attempt, "x-last-error": describe(exc)[:500]})
        props = d.properties
        if verdict.outcome == RETRY:
            delays = self.config.retry_delays_s
            delay = delays[min(attempt - 1, len(delays) - 1)]
            verdict.retry_in_s = delay
            return Message("", self.names.retry(delay), d.body, _with_headers(verdict, headers), mandatory=True)
        headers.update({"x-dead-reason": verdict.reason, "x-dead-detail": verdict.detail,
                        "x-dead-exception": type(exc).__name__, "x-dead-worker": self.spec.name,
                        "x-dead-at": datetime.now(timezone.utc).isoformat(),
                        "x-original-routing-key": props.type or d.routing_key})
        field = getattr(exc, "field", None)
        if field:
            headers["x-dead-field"] = field
        return Message(topology.DEAD_EXCHANGE, self.spec.name, d.body, _with_headers(verdict, headers), mandatory=True)

    def _count(self, verdicts: list[Verdict], unforwarded: set[int]) -> None:
        """Outcomes into the counters; a failure we could not forward is requeued, so not counted."""
        tallies = {PROCESSED: Tally(), DUPLICATE: Tally(), RETRY: Tally()}
        dead: dict[str, Tally] = {}
        for v in verdicts:
            if v.outcome == DEAD:
                if v.delivery.tag not in unforwarded:
                    dead.setdefault(v.reason or "unknown", Tally())[v.delivery.event_type] += 1
            elif v.outcome != RETRY or v.delivery.tag not in unforwarded:
                tallies[v.outcome][v.delivery.event_type] += 1
        self.metrics.count(PROCESSED_TOTAL, tallies[PROCESSED])
        self.metrics.count(DUPLICATES, tallies[DUPLICATE])
        self.metrics.count(RETRIED, tallies[RETRY])
        for reason, tally in dead.items():
            self.metrics.count(DEAD_LETTERED, tally, reason)

    def _request_settle(self, batch: list[Delivery], unforwarded: set[int], types: Tally) -> None:
        if unforwarded:  # ack the rest one by one; requeue what we could not forward
            ack_upto, acks, requeue = None, [d.tag for d in batch if d.tag not in unforwarded], sorted(unforwarded)
            types = Tally(d.event_type for d in batch if d.tag not in unforwarded)
        else:  # earlier batches are settled already, so one multiple-ack covers this batch
            ack_upto, acks, requeue = batch[-1].tag, [], []
        try:
            self._connection.add_callback_threadsafe(
                partial(self._settle, batch[0].generation, ack_upto, acks, requeue, types, len(batch)))
        except Exception:
            pass  # connection gone: unacked messages are redelivered, idempotency makes that safe

    def _relay(self) -> None:
        try:
            sent = outbox.relay(self.processor.connection(), self.publisher, self.config.exchange,
                                self.spec.name, self.config.outbox_relay_min_age_s)
            if sent:
                log.info("outbox relayed", worker=self.spec.name, events=sent)
            self.metrics.outbox_backlog.set(outbox.backlog(self.processor.connection()))
        except DatabaseUnavailable:
            pass
        except Exception as exc:
            log.warning("outbox relay failed", worker=self.spec.name, error=f"{type(exc).__name__}: {exc}")

    def _log(self, verdicts: list[Verdict], duration_ms: float) -> None:
        lines = []
        for v in verdicts:
            e = v.event
            fields = {"worker": self.spec.name, "event_type": e.event_type if e else v.delivery.properties.type,
                      "client_generated_id": e.id if e else v.delivery.properties.message_id,
                      "user_id": e.user_id if e else None, "duration_ms": duration_ms}
            if v.outcome in (PROCESSED, DUPLICATE):
                lines.append(("info", _OUTCOME_MSG[v.outcome], fields))
                continue
            fields.update(attempt=v.delivery.attempt, error=describe(v.error)[:300])
            if v.outcome == RETRY:
                lines.append(("warning", _OUTCOME_MSG[v.outcome], {**fields, "retry_in_s": v.retry_in_s}))
            else:
                lines.append(("error", _OUTCOME_MSG[v.outcome], {**fields, "reason": v.reason}))
        write_lines(lines)


def _with_headers(verdict: Verdict, headers: dict) -> pika.BasicProperties:
    """The original's properties with our headers; ids filled from the envelope when a raw publish lacked them."""
    props, event = verdict.delivery.properties, verdict.event
    return pika.BasicProperties(
        content_type=props.content_type or "application/json", delivery_mode=broker.PERSISTENT,
        message_id=props.message_id or (event.id if event else None),
        type=props.type or (event.event_type if event else None), timestamp=props.timestamp, headers=headers)
