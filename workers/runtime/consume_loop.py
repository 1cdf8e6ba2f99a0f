"""The I/O thread of a worker (DESIGN §4): it owns the consuming connection.

It receives deliveries, hands them to the pipeline (workers/runtime/pipeline.py) a batch at a time and
settles them when the pipeline asks (`settle`, from any thread). It keeps calling into pika, so
heartbeats flow however long a batch takes, and it reconnects with backoff when the broker goes.
Everything it holds is touched only on its own thread, except what the health probes read.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable

import pika

from shared import broker, topology
from shared.backoff import Backoff
from shared.config import Config
from shared.logging import log
from workers.runtime.metrics import ACKED, WorkerMetrics
from workers.runtime.processor import Delivery

# a connection that is gone or going: closing or scheduling on it cannot work, and need not
_GONE = (pika.exceptions.ConnectionWrongStateError, *broker.CONNECTION_ERRORS)


@dataclass(frozen=True)
class Settlement:
    """How to settle one batch on the channel that delivered it."""

    generation: int          # the channel's; tags mean nothing on another
    ack_upto: int | None     # one multiple-ack up to this tag (the happy path)
    acks: tuple[int, ...]    # or one by one
    requeue: tuple[int, ...]  # nacked back to the queue: the broker redelivers them
    acked: Tally             # event type → count, for the metrics
    count: int               # how many deliveries this settles


def settle_all(batch: list[Delivery], unforwarded: set[int]) -> Settlement:
    """Ack the batch, except what could not be forwarded (retry or dead letter): requeue those."""
    if unforwarded:
        acked = [d for d in batch if d.tag not in unforwarded]
        return Settlement(batch[0].generation, None, tuple(d.tag for d in acked), tuple(sorted(unforwarded)),
                          Tally(d.event_type for d in acked), len(batch))
    # earlier batches are settled already, so one multiple-ack covers this one
    return Settlement(batch[0].generation, batch[-1].tag, (), (), Tally(d.event_type for d in batch), len(batch))


def requeue_all(batch: list[Delivery]) -> Settlement:
    return Settlement(batch[0].generation, None, (), tuple(d.tag for d in batch), Tally(), len(batch))


class ConsumeLoop:
    def __init__(self, name: str, config: Config, bindings: Iterable[str], prefetch: int, max_batch: int,
                 parse: Callable[[Delivery], object], metrics: WorkerMetrics, stopping: threading.Event):
        self.name, self.config, self.bindings = name, config, tuple(bindings)
        self.prefetch, self.max_batch = prefetch, max_batch
        self.queue = topology.QueueNames(name).main
        self._parse, self.metrics, self.stopping = parse, metrics, stopping
        # to the pipeline: one batch at a time (None: stop); `idle` is set while it has none
        self.batches: queue.Queue = queue.Queue(maxsize=1)
        self.idle = threading.Event()
        self.idle.set()
        self._pending: list[Delivery] = []
        self._connection = None
        self._channel = None
        self._generation = 0
        self._in_flight = 0  # delivered on the current channel, not yet settled
        metrics.in_flight.set_function(lambda: self._in_flight)
        self.turned = time.monotonic()  # when the loop last turned (/livez)

    def consuming(self) -> bool:
        channel = self._channel
        return channel is not None and channel.is_open

    def serve(self) -> None:
        """Consume until stopped, reconnecting with backoff; then tell the pipeline to stop."""
        backoff = Backoff()
        try:
            while not self.stopping.is_set():
                try:
                    self._consume(backoff)
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 406:  # PRECONDITION_FAILED: our queue exists with other arguments
                        raise
                    self.stopping.set()
                    raise topology.TopologyMismatch(
                        f"queue {self.queue!r} exists with arguments that break our guarantees "
                        f"(want quorum, x-delivery-limit={self.config.delivery_limit}, dead-letter to "
                        f"{topology.DEAD_EXCHANGE}, at-least-once): {exc.reply_text}") from None
                except broker.CONNECTION_ERRORS as exc:
                    self._pending.clear()  # unacked: the broker redelivers them to someone
                    delay = backoff.next()
                    log.warning("broker unavailable, reconnecting", worker=self.name,
                                error=f"{type(exc).__name__}: {exc}", retry_in_s=round(delay, 2),
                                attempt=backoff.attempts)
                    self._wait(delay)
        finally:
            self.batches.put(None)

    def settle(self, settlement: Settlement) -> None:
        """From any thread: settle a batch on the I/O thread (pika is not thread-safe)."""
        connection = self._connection
        try:
            connection.add_callback_threadsafe(partial(self._settle, settlement))
        except (AttributeError, *_GONE) as exc:
            # no connection, or it is closing: the broker requeues what it held, and idempotency
            # makes the redelivery safe
            log.info("batch left to redelivery: connection gone", worker=self.name, count=settlement.count,
                     error=type(exc).__name__)

    def _wait(self, delay: float) -> None:
        """Sit out a reconnect delay, turning as we go: waiting for the broker is not hanging."""
        deadline = time.monotonic() + delay
        while not self.stopping.is_set():
            self.turned = now = time.monotonic()
            if now >= deadline:
                return
            self.stopping.wait(min(deadline - now, 1.0))

    def _consume(self, backoff: Backoff) -> None:
        connection, node = broker.open_connection(self.config.rabbitmq_url, heartbeat_s=self.config.heartbeat_s,
                                                  client_name=f"worker-{self.name}")
        try:
            channel = connection.channel()
            topology.declare_worker(channel, self.name, self.bindings, self.config.exchange,
                                    self.config.delivery_limit, self.config.retry_delays_s)
            channel.basic_qos(prefetch_count=self.prefetch)
            self._generation += 1
            self._connection, self._channel = connection, channel
            cancelled = []  # e.g. the queue was deleted: consuming again needs it declared again
            channel.add_on_cancel_callback(cancelled.append)
            tag = channel.basic_consume(self.queue, partial(self._on_message, self._generation))
            backoff.reset()
            log.info("consuming", worker=self.name, queue=self.queue, node=broker.address(node))
            while not self.stopping.is_set():
                self.turned = time.monotonic()
                connection.process_data_events(time_limit=0 if self._pending and self.idle.is_set() else 0.2)
                self._dispatch()
                if cancelled:
                    raise broker.ConsumerCancelled(f"the broker cancelled our consumer of {self.queue}")
            channel.basic_cancel(tag)  # no new deliveries; finish what we hold
            deadline = time.monotonic() + self.config.drain_timeout_s
            while (self._pending or not self.idle.is_set()) and time.monotonic() < deadline:
                self.turned = time.monotonic()
                connection.process_data_events(time_limit=0.1)
                self._dispatch()
        finally:
            self._channel = None
            self._in_flight = 0  # the broker requeues whatever this channel held
            if connection.is_open:
                try:
                    connection.close()
                except _GONE as exc:  # closing a dying connection: nothing left to save
                    log.info("broker connection closed uncleanly", worker=self.name, error=type(exc).__name__)

    def _on_message(self, generation, _channel, method, properties, body) -> None:
        self._in_flight += 1
        delivery = Delivery(method.delivery_tag, body, properties, method.routing_key, generation,
                            self.metrics.event_type(properties.type or method.routing_key))
        # parsed here, on the I/O thread, while the processing thread mostly waits on the database
        # with the GIL released: the two overlap instead of taking turns (parse never raises)
        delivery.parsed = self._parse(delivery)
        self._pending.append(delivery)

    def _dispatch(self) -> None:
        if self._pending and self.idle.is_set():
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            self.idle.clear()
            self.batches.put(batch)

    def _settle(self, s: Settlement) -> None:
        channel = self._channel
        if channel is None or s.generation != self._generation or not channel.is_open:
            return  # that channel is gone; the broker has requeued its unacked messages
        for tag in s.requeue:
            channel.basic_nack(tag, requeue=True)
        if s.ack_upto is not None:
            channel.basic_ack(s.ack_upto, multiple=True)
        for tag in s.acks:
            channel.basic_ack(tag)
        self._in_flight -= s.count
        self.metrics.count(ACKED, s.acked)
