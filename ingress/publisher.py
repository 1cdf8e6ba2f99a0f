"""The ingress's confirming publisher: one asynchronous connection per process, shared by request threads.

A pika SelectConnection runs its ioloop in a daemon thread. Request threads hand it messages
with `publish()` and wait on one Future per message, so the confirms of many concurrent
requests overlap instead of costing a round trip each (a synchronous confirm caps near
1,600/s). A Future resolves to CONFIRMED or UNROUTABLE (the broker returned the mandatory
message: no queue is bound), or raises a PublishError. While disconnected or blocked by a
resource alarm, `publish()` raises BrokerUnavailable at once, so the caller can answer 503
without waiting.

Only the ioloop thread touches pika; other threads reach it through
`ioloop.add_callback_threadsafe`. Request–reply: the channel consumes RabbitMQ's direct
reply-to pseudo-queue; `expect_reply()` registers a correlation id and its Future.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, InvalidStateError
from typing import Sequence

import pika
from pika.adapters.select_connection import IOLoop

from ingress import metrics
from shared import broker
from shared.backoff import Backoff
from shared.logging import log

REPLY_TO = "amq.rabbitmq.reply-to"
CONFIRMED = "confirmed"
UNROUTABLE = "unroutable"

# (exchange, routing_key, body, properties), published with mandatory=True
Message = tuple[str, str, bytes, pika.BasicProperties]


class PublishError(Exception):
    """The broker did not take the message; the client should keep it and retry."""


class BrokerUnavailable(PublishError):
    """Not connected, or the broker has blocked publishers (resource alarm)."""


class Nacked(PublishError):
    """The broker refused the message (basic.nack)."""


class PublishTimeout(PublishError):
    """No confirm in time; the message may still arrive (the worker deduplicates a retry)."""


class _Pending:
    """A published, unconfirmed message: what a basic.return is matched against."""

    __slots__ = ("future", "exchange", "routing_key", "body", "returned", "sent")

    def __init__(self, future: Future, exchange: str, routing_key: str, body: bytes, sent: float):
        self.future, self.exchange, self.routing_key, self.body = future, exchange, routing_key, body
        self.returned = False
        self.sent = sent  # perf_counter() at basic_publish: spotter_publish_seconds


def _settle(future: Future, result=None, error: Exception | None = None) -> None:
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except InvalidStateError:  # the waiter cancelled it
        pass


class Publisher:
    """Publishes with mandatory and publisher confirms; reconnects with growing backoff."""

    def __init__(self, url: str, name: str = "spotter-ingress", heartbeat_s: int = 30,
                 blocked_timeout_s: float = 10.0, declare_exchanges: tuple[tuple[str, str], ...] = ()):
        self._params = broker.parameters(url, heartbeat_s=heartbeat_s,
                                         blocked_timeout_s=blocked_timeout_s, client_name=name)
        self._declare_exchanges = declare_exchanges  # (name, type): what we publish to
        self.pid = os.getpid()  # a pika connection must never cross a fork
        self._lock = threading.Lock()      # guards _inbox, _ready and _blocked
        self._inbox: list[tuple[Message, Future]] = []
        self._ready = threading.Event()
        self._blocked = False
        self._stopping = False
        self._ioloop: IOLoop | None = None
        self._thread: threading.Thread | None = None
        # ioloop thread only
        self._connection: pika.SelectConnection | None = None
        self._channel = None
        self._seq = 0
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._replies: dict[str, Future] = {}  # correlation_id → Future of the reply body
        self._backoff = Backoff(first=0.2, cap=5.0)

    # ---- any thread ---------------------------------------------------------------------
    def start(self) -> "Publisher":
        # pika logs every failed reconnect as an error, in plain text; we log it once, as JSON
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        self._ioloop = IOLoop()
        self._ioloop.add_callback_threadsafe(self._connect)
        self._thread = threading.Thread(target=self._run, name="publisher-ioloop", daemon=True)
        self._thread.start()
        return self

    def is_ready(self) -> bool:
        """Connected, confirm channel open, and not blocked by a resource alarm."""
        return self._ready.is_set() and not self._blocked

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout) and not self._blocked

    def publish(self, messages: Sequence[Message]) -> list[Future]:
        """Queue messages for the ioloop; one Future each. Raises BrokerUnavailable at once."""
        futures = [Future() for _ in messages]
        with self._lock:
            if not self._ready.is_set():
                raise BrokerUnavailable("not connected to the broker")
            if self._blocked:
                raise BrokerUnavailable("the broker is blocking publishers (resource alarm)")
            wake = not self._inbox  # else a flush is already scheduled and will take these too
            self._inbox.extend(zip(messages, futures))
            if wake:
                self._ioloop.add_callback_threadsafe(self._flush)
        return futures

    def confirm(self, messages: Sequence[Message], timeout: float) -> list[str]:
        """Publish and wait for every confirm: CONFIRMED or UNROUTABLE each, else PublishError."""
        futures = self.publish(messages)
        deadline = time.monotonic() + timeout
        try:
            return [f.result(max(0.0, deadline - time.monotonic())) for f in futures]
        except TimeoutError:
            raise PublishTimeout(f"no publisher confirm within {timeout}s") from None

    def expect_reply(self, correlation_id: str) -> Future:
        """Register before publishing with reply_to=REPLY_TO; call forget_reply when done waiting."""
        future = Future()
        with self._lock:
            self._replies[correlation_id] = future
        return future

    def forget_reply(self, correlation_id: str) -> None:
        with self._lock:
            self._replies.pop(correlation_id, None)

    def close(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._ioloop.add_callback_threadsafe(self._shutdown)
        self._thread.join(timeout)

    # ---- ioloop thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                self._ioloop.start()
                return  # stopped by close()
            except Exception:
                # A bug in one callback must not end publishing for the whole process.
                log.exception("publisher callback failed")

    def _connect(self) -> None:
        if self._stopping:
            return
        try:
            self._connection = pika.SelectConnection(
                self._params, on_open_callback=self._on_open, on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed, custom_ioloop=self._ioloop)
        except Exception as exc:  # bad parameters surface here, network errors in _on_open_error
            self._down(f"cannot connect: {exc!r}")

    def _on_open(self, connection) -> None:
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel) -> None:
        self._channel, self._seq = channel, 0
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_select_ok)

    def _on_confirm_select_ok(self, _frame) -> None:
        # direct reply-to: consume the pseudo-queue (no ack) before publishing with reply_to
        self._channel.basic_consume(REPLY_TO, self._on_reply, auto_ack=True)
        self._declare_next(list(self._declare_exchanges))

    def _declare_next(self, exchanges: list[tuple[str, str]]) -> None:
        # Same declarations as the topology: publishing to a missing exchange would close the
        # channel (404) on every request; an existing exchange with no queue gives a clean 422.
        if not exchanges:
            self._mark_ready()
            return
        (name, kind), rest = exchanges[0], exchanges[1:]
        self._channel.exchange_declare(name, exchange_type=kind, durable=True,
                                       callback=lambda _f: self._declare_next(rest))

    def _mark_ready(self) -> None:
        self._backoff.reset()
        with self._lock:
            self._ready.set()
        log.info("broker connected", connection=self._params.client_properties.get("connection_name"))

    def _flush(self) -> None:
        with self._lock:
            batch, self._inbox = self._inbox, []
        channel = self._channel
        now = time.perf_counter()  # one clock read per flush: the batch goes out together
        for i, ((exchange, routing_key, body, properties), future) in enumerate(batch):
            if channel is None or not channel.is_open:
                for _, f in batch[i:]:
                    _settle(f, error=BrokerUnavailable("connection to the broker lost"))
                return
            try:
                channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
            except Exception as exc:  # channel closing under us: the close callback fails the pending
                for _, f in batch[i:]:
                    _settle(f, error=BrokerUnavailable(f"publish failed: {exc!r}"))
                return
            self._seq += 1
            self._pending[self._seq] = _Pending(future, exchange, routing_key, body, now)

    def _on_reply(self, _channel, _method, properties, body) -> None:
        with self._lock:
            future = self._replies.pop(properties.correlation_id or "", None)
        if future is not None:
            _settle(future, body)

    def _on_return(self, _channel, method, _properties, body) -> None:
        # A return carries no delivery tag. RabbitMQ sends it before the message's ack, so the
        # message is still pending: take the oldest unmarked one with the same exchange, key and
        # body. Two such messages are byte-identical (same id), so confusing them is harmless.
        for entry in self._pending.values():
            if (not entry.returned and entry.routing_key == method.routing_key
                    and entry.exchange == method.exchange and entry.body == body):
                entry.returned = True
                return

    def _on_confirm(self, frame) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tag = method.delivery_tag
        if method.multiple:
            while self._pending:
                first = next(iter(self._pending))
                if tag and first > tag:
                    break
                self._resolve(self._pending.popitem(last=False)[1], acked)
        else:
            entry = self._pending.pop(tag, None)
            if entry is not None:
                self._resolve(entry, acked)

    @staticmethod
    def _resolve(entry: _Pending, acked: bool) -> None:
        if acked:
            metrics.observe_publish(time.perf_counter() - entry.sent)
            _settle(entry.future, UNROUTABLE if entry.returned else CONFIRMED)
        else:
            _settle(entry.future, error=Nacked("the broker refused the message"))

    def _on_blocked(self, _connection, frame) -> None:
        with self._lock:
            self._blocked = True
        log.warning("broker blocks publishers", reason=getattr(frame.method, "reason", ""))

    def _on_unblocked(self, _connection, _frame) -> None:
        with self._lock:
            self._blocked = False
        log.info("broker unblocked publishers")

    def _on_channel_closed(self, _channel, reason) -> None:
        self._channel = None
        # A channel closed by the broker (e.g. a precondition failed) is rare: start over on a
        # new connection rather than keep a second recovery path.
        if self._connection is not None and self._connection.is_open:
            log.warning("broker closed the channel", reason=str(reason))
            self._fail_all(BrokerUnavailable(f"channel closed: {reason}"))
            self._connection.close()

    def _on_open_error(self, _connection, error) -> None:
        self._down(f"cannot connect: {error!r}")

    def _on_closed(self, _connection, reason) -> None:
        self._down(f"connection closed: {reason!r}")

    def _down(self, why: str) -> None:
        was_ready = self._ready.is_set()
        self._connection, self._channel = None, None
        self._fail_all(BrokerUnavailable("connection to the broker lost"))
        if self._stopping:
            self._ioloop.stop()
            return
        delay = self._backoff.next()
        log.warning("broker connection lost" if was_ready else "broker unreachable",
                    reason=why[:200], retry_in_s=round(delay, 2))
        self._ioloop.call_later(delay, self._connect)

    def _fail_all(self, error: PublishError) -> None:
        with self._lock:
            self._ready.clear()
            self._blocked = False
            waiting, self._inbox = self._inbox, []
        pending, self._pending = self._pending, OrderedDict()
        for entry in pending.values():
            _settle(entry.future, error=error)
        for _, future in waiting:
            _settle(future, error=error)

    def _shutdown(self) -> None:
        connection = self._connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            connection.close()  # _on_closed stops the ioloop
        else:
            self._fail_all(BrokerUnavailable("publisher closed"))
            self._ioloop.stop()
