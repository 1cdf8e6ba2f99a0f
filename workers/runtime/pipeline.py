"""The processing thread of a worker (DESIGN §4–5): a batch in, a settlement out.

    commit the batch's work (workers/runtime/processor.py; the database gone: hold it, back off, redo)
    → publish its outbox → decide each failure (workers/runtime/decision.py) → record the rejections
    → forward retries and dead letters → answer request–reply callers → log, count → settle

The pipeline owns the database connection (through the processor) and a publishing connection;
the I/O thread (workers/runtime/consume_loop.py) owns the consuming one and settles what we ask it to.
Every batch is settled: acked, or requeued (a failure we could not forward, or stopping while
the database is down). Never left unsettled: the next batch's one multiple-ack would ack it too.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter as Tally
from datetime import datetime, timezone
from typing import Callable

import pika

from shared import broker, replies, topology
from workers.runtime import outbox, receipts
from shared.backoff import Backoff
from shared.config import Config
from workers.runtime.consume_loop import Settlement, requeue_all, settle_all
from workers.runtime.decision import ACK, DEAD, RETRY, Decision, decide
from shared.errors import describe
from workers.runtime.handler import WorkerSpec
from shared.logging import log, write_lines
from workers.runtime.metrics import CONSUMED, DEAD_LETTERED, DUPLICATES, PROCESSED as PROCESSED_TOTAL, RETRIED, WorkerMetrics
from workers.runtime.processor import DUPLICATE, PROCESSED, BatchProcessor, DatabaseUnavailable, Delivery, Verdict
from workers.runtime.publisher import BatchPublisher, Message

_OUTCOME_MSG = {PROCESSED: "event processed", DUPLICATE: "duplicate skipped",
                RETRY: "event retried", DEAD: "event dead-lettered"}


class Pipeline:
    def __init__(self, spec: WorkerSpec, config: Config, processor: BatchProcessor, publisher: BatchPublisher,
                 metrics: WorkerMetrics, stopping: threading.Event):
        self.spec, self.config, self.processor, self.publisher = spec, config, processor, publisher
        self.metrics, self.stopping = metrics, stopping
        self.names = topology.QueueNames(spec.name)

    def run(self, batches: queue.Queue, idle: threading.Event, settle: Callable[[Settlement], None]) -> None:
        """The processing thread: batches until None; the outbox relay and heartbeats between them."""
        next_relay = 0.0
        while True:
            try:
                batch = batches.get(timeout=1.0)
            except queue.Empty:
                batch = ()
            if batch is None:
                return
            if batch:
                try:
                    settlement = self.handle(batch)
                except Exception:  # our bug: requeue rather than leave the batch held forever
                    log.exception("batch failed, requeued", worker=self.spec.name, batch=len(batch))
                    settlement = requeue_all(batch)
                settle(settlement)
                idle.set()
            if time.monotonic() >= next_relay and not self.stopping.is_set():
                next_relay = time.monotonic() + self.config.outbox_relay_interval_s
                self._relay()
            self.publisher.keepalive()

    def handle(self, batch: list[Delivery]) -> Settlement:
        """Commit, forward, answer; how to settle the batch."""
        started = time.perf_counter()
        self.metrics.count(CONSUMED, Tally(d.event_type for d in batch))
        verdicts = self._commit(batch)
        if verdicts is None:
            # Stopping with the database down: hand the batch back now. Left unacked, it was acked
            # by the multiple-ack of the next batch drained before exit, once the database was back
            # (bin/chaos seed 1009: confirmed events never applied; tests/workers/test_stop_during_outage.py).
            return requeue_all(batch)
        duration_ms = round((time.perf_counter() - started) * 1000 / len(batch), 3)
        decided = [(v, decide(v.outcome, v.error, v.delivery.attempt, self.config.max_attempts,
                              self.config.retry_delays_s)) for v in verdicts]
        failing = [(v, d) for v, d in decided if d.action != ACK]  # none on the happy path
        if failing and not self._record_rejections(failing):
            return requeue_all(batch)  # stopped while the database was down
        unforwarded = self._forward(failing)
        self._reply(decided)
        self._log(decided, duration_ms)
        self._count(decided, unforwarded)
        self.metrics.processing.observe(time.perf_counter() - started)
        return settle_all(batch, unforwarded)

    # ---- steps ------------------------------------------------------------------------------
    def _commit(self, batch: list[Delivery]) -> list[Verdict] | None:
        """The batch's work committed, its outbox published; None when stopped while the database is down."""
        backoff = Backoff()
        while True:
            try:
                verdicts, written = self.processor.process(batch)
                break
            except DatabaseUnavailable as exc:
                if self.stopping.is_set():
                    return None  # the caller requeues it: redelivered to a replica that runs
                delay = backoff.next()
                log.warning("database unavailable, holding batch", worker=self.spec.name, batch=len(batch),
                            error=str(exc)[:200], retry_in_s=round(delay, 2), attempt=backoff.attempts)
                self.stopping.wait(delay)
        self._publish_outbox(written)
        return verdicts

    def _publish_outbox(self, written) -> None:
        try:
            outbox.publish_written(self.processor.connection(), self.publisher, self.config.exchange,
                                   written, self.spec.name)
        except Exception as exc:  # committed: the relay publishes these rows later
            log.warning("outbox publish failed, relay will retry", worker=self.spec.name,
                        events=len(written), error=f"{type(exc).__name__}: {exc}")

    def _record_rejections(self, failing: list[tuple[Verdict, Decision]]) -> bool:
        """Record what the batch dead-letters (workers/runtime/receipts.py) before anything is acked, so a
        crash redelivers and records again. Database unreachable: held and retried with backoff,
        as for the batch's own work; nothing is dead-lettered without its receipt. False when
        stopping meanwhile. Any other failure to record is logged and the messages are
        dead-lettered without receipts (pending for the sender)."""
        rejections = []
        for v, d in failing:
            if d.action == DEAD:
                r = receipts.rejection(v.event, v.delivery.body, v.delivery.properties.type or v.delivery.routing_key,
                                       d.reason, getattr(v.error, "field", None), d.detail)
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
                    return False
                delay = backoff.next()
                log.warning("database unavailable, holding dead letters until their rejections are recorded",
                            worker=self.spec.name, rejections=len(rejections), error=str(exc)[:200],
                            retry_in_s=round(delay, 2), attempt=backoff.attempts)
                self.stopping.wait(delay)
            except Exception as exc:
                log.error("could not record rejections; dead-lettering without receipts", worker=self.spec.name,
                          rejections=len(rejections), error=describe(exc)[:300])
                return True
        self._publish_outbox(written)
        return True

    def _forward(self, failing: list[tuple[Verdict, Decision]]) -> set[int]:
        """Republish decided failures: retries to their delay queue, dead letters to W.dead.
        Returns the tags the broker did not take: those are requeued, not acked."""
        if not failing:
            return set()
        try:
            self.publisher.publish([self._forwarded(v, d) for v, d in failing])
            return set()
        except Exception as exc:
            log.error("could not forward failed messages; they will be redelivered", worker=self.spec.name,
                      count=len(failing), error=f"{type(exc).__name__}: {exc}")
            return {v.delivery.tag for v, _ in failing}

    def _forwarded(self, v: Verdict, d: Decision) -> Message:
        delivery, exc = v.delivery, v.error
        headers = dict(delivery.properties.headers or {})
        headers.update({"x-attempts": delivery.attempt, "x-last-error": describe(exc)[:500]})
        if d.action == RETRY:
            return Message("", self.names.retry(d.retry_in_s), delivery.body, _with_headers(v, headers), mandatory=True)
        headers.update({"x-dead-reason": d.reason, "x-dead-detail": d.detail,
                        "x-dead-exception": type(exc).__name__, "x-dead-worker": self.spec.name,
                        "x-dead-at": datetime.now(timezone.utc).isoformat(),
                        "x-original-routing-key": delivery.properties.type or delivery.routing_key})
        field = getattr(exc, "field", None)
        if field:
            headers["x-dead-field"] = field
        return Message(topology.DEAD_EXCHANGE, self.spec.name, delivery.body, _with_headers(v, headers), mandatory=True)

    def _reply(self, decided: list[tuple[Verdict, Decision]]) -> None:
        """Answer request–reply callers (shared/replies.py); a lost answer only makes the caller wait it out."""
        messages = []
        for v, d in decided:
            props = v.delivery.properties
            if not props.reply_to or d.action == RETRY:
                continue
            if d.action == DEAD:
                body = replies.refusal(v.error, d.reason, d.detail)
            else:
                body = replies.duplicate() if v.outcome == DUPLICATE else replies.ok(v.reply)
            messages.append(Message("", props.reply_to, body, pika.BasicProperties(
                content_type="application/json", correlation_id=props.correlation_id, delivery_mode=1)))
        if messages:
            try:
                self.publisher.publish(messages)
            except Exception as exc:
                log.warning("could not send replies", worker=self.spec.name, error=f"{type(exc).__name__}: {exc}")

    def _relay(self) -> None:
        try:
            sent = outbox.relay(self.processor.connection(), self.publisher, self.config.exchange,
                                self.spec.name, self.config.outbox_relay_min_age_s)
            if sent:
                log.info("outbox relayed", worker=self.spec.name, events=sent)
            self.metrics.outbox_backlog.set(outbox.backlog(self.processor.connection()))
        except DatabaseUnavailable:
            pass  # the next batch finds out and holds itself; the relay tries again next turn
        except Exception as exc:
            log.warning("outbox relay failed", worker=self.spec.name, error=f"{type(exc).__name__}: {exc}")

    def _log(self, decided: list[tuple[Verdict, Decision]], duration_ms: float) -> None:
        lines = []
        for v, d in decided:
            e = v.event
            fields = {"worker": self.spec.name, "event_type": e.event_type if e else v.delivery.properties.type,
                      "client_generated_id": e.id if e else v.delivery.properties.message_id,
                      "user_id": e.user_id if e else None, "duration_ms": duration_ms}
            if d.action == ACK:
                lines.append(("info", _OUTCOME_MSG[v.outcome], fields))
                continue
            fields.update(attempt=v.delivery.attempt, error=describe(v.error)[:300])
            if d.action == RETRY:
                lines.append(("warning", _OUTCOME_MSG[RETRY], {**fields, "retry_in_s": d.retry_in_s}))
            else:
                lines.append(("error", _OUTCOME_MSG[DEAD], {**fields, "reason": d.reason}))
        write_lines(lines)

    def _count(self, decided: list[tuple[Verdict, Decision]], unforwarded: set[int]) -> None:
        """Outcomes into the counters; a failure we could not forward is requeued, so not counted."""
        tallies = {PROCESSED: Tally(), DUPLICATE: Tally(), RETRY: Tally()}
        dead: dict[str, Tally] = {}
        for v, d in decided:
            if d.action == ACK:
                tallies[v.outcome][v.delivery.event_type] += 1
            elif v.delivery.tag in unforwarded:
                continue
            elif d.action == RETRY:
                tallies[RETRY][v.delivery.event_type] += 1
            else:
                dead.setdefault(d.reason or "unknown", Tally())[v.delivery.event_type] += 1
        self.metrics.count(PROCESSED_TOTAL, tallies[PROCESSED])
        self.metrics.count(DUPLICATES, tallies[DUPLICATE])
        self.metrics.count(RETRIED, tallies[RETRY])
        for reason, tally in dead.items():
            self.metrics.count(DEAD_LETTERED, tally, reason)


def _with_headers(verdict: Verdict, headers: dict) -> pika.BasicProperties:
    """The original's properties with our headers; ids filled from the envelope when a raw publish lacked them."""
    props, event = verdict.delivery.properties, verdict.event
    return pika.BasicProperties(
        content_type=props.content_type or "application/json", delivery_mode=broker.PERSISTENT,
        message_id=props.message_id or (event.id if event else None),
        type=props.type or (event.event_type if event else None), timestamp=props.timestamp, headers=headers)
