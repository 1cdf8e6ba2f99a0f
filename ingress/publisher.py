"""The ingress's confirming publisher: one connection per gunicorn worker process, on gevent's hub.

The ingress runs under gunicorn's gevent worker (ingress/gunicorn_conf.py): requests are
greenlets on one OS thread, and the pika connection (GeventConnection) handles its socket from
the same hub. A request publishes on the shared channel itself, with no hand-off to another
thread: pika calls never yield to another greenlet, so only one is ever inside pika. It then
sleeps until the broker has confirmed (or returned) each of its messages. Confirms of many
requests overlap, and the frames that requests buffered while the hub was busy leave in one
send (shared/pika_internals.py coalesce_writes), or every FLUSH_AT_BYTES when a busy hub pass buffers more.
RABBITMQ_URL may name several nodes of a cluster: a lost or refused connection moves on to the
next node at once (shared/broker.py Failover).
Results: CONFIRMED, UNROUTABLE (the broker returned the mandatory message: no queue is bound),
or a PublishError. While disconnected or blocked by a resource alarm, publishing raises
BrokerUnavailable at once, so the caller can answer 503 without waiting. Anything else raised
while publishing is a bug and propagates as itself (the ingress answers 500, not 503).
The frames go out through shared/pika_internals.py, the only module that uses pika internals.

Request–reply: the channel consumes RabbitMQ's direct reply-to pseudo-queue; `expect_reply()`
registers a correlation id and the Reply that its answer settles.

Subscriptions: events the ingress itself listens to (`inbox.updated`, to wake long polls) arrive
on an exclusive, server-named queue of this connection, bound to `subscribe`'s routing keys and
handed to `on_event(body)`; `on_event(None)` after each (re)connect, since whatever was published
while the connection was down is lost to this process.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Sequence

import gevent
import pika
from gevent.event import Event
from pika.adapters.gevent_connection import GeventConnection

from ingress import metrics
from shared import broker, pika_internals, process
from shared.backoff import Backoff
from shared.logging import log

REPLY_TO = "amq.rabbitmq.reply-to"
# Under load a hub pass serves every ready request (~60) before pika's writer runs, so each pass's
# publishes reached the broker as one burst while it sat idle. Sending whenever this much is
# buffered lets it start on the first ones while the rest are parsed: +10 % confirmed req/s in
# paired runs. 8 KiB did worse (smaller bursts cost the broker up to 2-3x the CPU per message);
# 32 KiB is about a whole pass.
FLUSH_AT_BYTES = 16 * 1024
CONFIRMED = "confirmed"
UNROUTABLE = "unroutable"

# (exchange, routing_key, body, properties), published with mandatory=True; properties are
# pika's, or already encoded (shared/frames.py event_properties)
Message = tuple[str, str, bytes, pika.BasicProperties | bytes]


class PublishError(Exception):
    """The broker did not take the message; the client should keep it and retry."""


class BrokerUnavailable(PublishError):
    """Not connected, or the broker has blocked publishers (resource alarm)."""


class Nacked(PublishError):
    """The broker refused the message (basic.nack)."""


class PublishTimeout(PublishError):
    """No confirm in time; the message may still arrive (the worker deduplicates a retry)."""


class _Confirms:
    """The messages of one confirm() call: settled one by one by the hub, awaited together."""

    __slots__ = ("results", "left", "error", "done", "deadline")

    def __init__(self, count: int, deadline: float):
        self.results: list[str | None] = [None] * count
        self.left = count
        self.error: PublishError | None = None
        self.done = Event()
        self.deadline = deadline  # time.monotonic(): then _expire fails what is still unconfirmed

    def settle(self, index: int, result: str | None = None, error: PublishError | None = None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.results[index] = result
        self.left -= 1
        if self.left == 0:
            self.done.set()


class _Pending:
    """A published, unconfirmed message: what a basic.return is matched against."""

    __slots__ = ("confirms", "index", "exchange", "routing_key", "body", "returned", "sent")

    def __init__(self, confirms: _Confirms, index: int, exchange: str, routing_key: str, body: bytes,
                 sent: float):
        self.confirms, self.index = confirms, index
        self.exchange, self.routing_key, self.body = exchange, routing_key, body
        self.returned = False
        self.sent = sent  # perf_counter() at basic_publish: spotter_publish_seconds


class Reply:
    """The answer to one request–reply message, settled by the hub when it arrives."""

    __slots__ = ("_body", "_error", "_done")

    def __init__(self):
        self._body: bytes | None = None
        self._error: PublishError | None = None
        self._done = Event()

    def settle(self, body: bytes | None = None, error: PublishError | None = None) -> None:
        if not self._done.is_set():
            self._body, self._error = body, error
            self._done.set()

    def result(self, timeout: float) -> bytes:
        """The reply body; TimeoutError when none came in time, PublishError when the connection went."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"no reply within {timeout}s")
        if self._error is not None:
            raise self._error
        return self._body


class Publisher:
    """Publishes with mandatory and publisher confirms; reconnects with growing backoff."""

    def __init__(self, url: str, name: str = "spotter-ingress", heartbeat_s: int = 30,
                 blocked_timeout_s: float = 10.0, declare_exchanges: tuple[tuple[str, str], ...] = (),
                 subscribe: tuple[tuple[str, str], ...] = (), on_event=None):
        # RABBITMQ_URL's nodes, from a random one; the next one at once when one fails, the
        # backoff only after all failed in a row (shared/broker.py Failover)
        self._nodes = broker.Failover(url, Backoff(first=0.2, cap=5.0), heartbeat_s=heartbeat_s,
                                      blocked_timeout_s=blocked_timeout_s, client_name=name)
        self._name = name
        self._declare_exchanges = declare_exchanges  # (name, type): what we publish to
        self._subscribe, self._on_event = subscribe, on_event  # (exchange, routing key) → on_event(body)
        self.pid = process.pid()  # a pika connection must never cross a fork
        self._ready = Event()
        self._closed = Event()
        self._blocked = False
        self._stopping = False
        self._connection: GeventConnection | None = None
        self._channel = None
        self._seq = 0
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._replies: dict[str, Reply] = {}  # correlation_id → its Reply
        self._expiry = None

    # ---- called from request greenlets ---------------------------------------------------
    def start(self) -> "Publisher":
        # pika logs every failed reconnect as an error, in plain text; we log it once, as JSON
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        pika_internals.self_check()  # logs which publish path this process uses
        pika_internals.coalesce_writes()
        self._connect()
        self._expiry = gevent.spawn(self._expire_loop)
        return self

    def is_ready(self) -> bool:
        """Connected, confirm channel open, and not blocked by a resource alarm."""
        return self._ready.is_set() and not self._blocked

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout) and not self._blocked

    def confirm(self, messages: Sequence[Message], timeout: float) -> list[str]:
        """Publish and wait for every confirm: CONFIRMED or UNROUTABLE each, else PublishError."""
        if not self._ready.is_set():
            raise BrokerUnavailable("not connected to the broker")
        if self._blocked:
            raise BrokerUnavailable("the broker is blocking publishers (resource alarm)")
        if not messages:
            return []
        channel = self._channel
        if channel is None or not channel.is_open:
            raise BrokerUnavailable("the channel to the broker is closing")
        confirms = _Confirms(len(messages), time.monotonic() + timeout)
        sent = time.perf_counter()
        for index, (exchange, routing_key, body, properties) in enumerate(messages):
            try:
                pika_internals.publish(channel, exchange, routing_key, body, properties)
            except broker.CONNECTION_ERRORS as exc:  # closing under us; its callback fails the rest
                raise BrokerUnavailable(f"publish failed: {exc!r}") from None
            self._seq += 1
            self._pending[self._seq] = _Pending(confirms, index, exchange, routing_key, body, sent)
            pika_internals.send_buffered(channel, FLUSH_AT_BYTES)  # after the count: the frame is queued
        # No timer per wait (it cost a request ~10 % of its CPU): _expire_loop enforces the deadline.
        confirms.done.wait()
        if confirms.error is not None:
            raise confirms.error
        return confirms.results

    def expect_reply(self, correlation_id: str) -> Reply:
        """Register before publishing with reply_to=REPLY_TO; call forget_reply when done waiting."""
        reply = self._replies[correlation_id] = Reply()
        return reply

    def forget_reply(self, correlation_id: str) -> None:
        self._replies.pop(correlation_id, None)

    def close(self, timeout: float = 5.0) -> None:
        self._stopping = True
        if self._expiry is not None:
            self._expiry.kill(block=False)
        connection = self._connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            connection.close()
            self._closed.wait(timeout)

    # ---- called by the hub (connection callbacks) ------------------------------------------
    def _connect(self) -> None:
        if self._stopping:
            return
        self._closed.clear()
        try:
            self._connection = GeventConnection(
                self._nodes.current, on_open_callback=self._on_open, on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed)
        except Exception as exc:  # bad parameters surface here, network errors in _on_open_error
            self._down(f"cannot connect: {exc!r}")

    def _on_open(self, connection) -> None:
        pika_internals.check_connection(connection)
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
            self._start_subscriptions()
            return
        (name, kind), rest = exchanges[0], exchanges[1:]
        self._channel.exchange_declare(name, exchange_type=kind, durable=True,
                                       callback=lambda _f: self._declare_next(rest))

    def _start_subscriptions(self) -> None:
        if not self._subscribe or self._on_event is None:
            self._mark_ready()
            return
        self._channel.queue_declare("", exclusive=True, auto_delete=True, arguments={"x-message-ttl": 30_000},
                                    callback=lambda frame: self._bind_next(frame.method.queue, list(self._subscribe)))

    def _bind_next(self, queue: str, bindings: list[tuple[str, str]]) -> None:
        if bindings:
            (exchange, key), rest = bindings[0], bindings[1:]
            self._channel.queue_bind(queue, exchange, routing_key=key,
                                     callback=lambda _f: self._bind_next(queue, rest))
            return
        self._channel.basic_consume(queue, self._on_subscribed, auto_ack=True)
        self._mark_ready()
        self._on_event(None)

    def _on_subscribed(self, _channel, _method, _properties, body) -> None:
        try:
            self._on_event(body)
        except Exception:  # a bad message must not take the connection down
            log.exception("subscribed event failed")

    def _mark_ready(self) -> None:
        self._nodes.connected()
        self._ready.set()
        log.info("broker connected", connection=self._name, node=broker.address(self._nodes.current))

    def _on_reply(self, _channel, _method, properties, body) -> None:
        reply = self._replies.pop(properties.correlation_id or "", None)
        if reply is not None:
            reply.settle(body)

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
            entry.confirms.settle(entry.index, UNROUTABLE if entry.returned else CONFIRMED)
        else:
            entry.confirms.settle(entry.index, error=Nacked("the broker refused the message"))

    def _expire_loop(self, every_s: float = 0.25) -> None:
        while not self._stopping:
            gevent.sleep(every_s)
            try:
                self._expire(time.monotonic())
            except Exception:  # a bug here must not leave requests waiting forever
                log.exception("confirm expiry failed")

    def _expire(self, now: float) -> None:
        """Fail the messages whose confirm() deadline passed; a late confirm then finds nothing."""
        expired = [tag for tag, entry in self._pending.items() if entry.confirms.deadline <= now]
        for tag in expired:
            entry = self._pending.pop(tag)
            timeout = PublishTimeout("no publisher confirm in time; the event may still arrive, re-send it")
            entry.confirms.settle(entry.index, error=timeout)

    def _on_blocked(self, _connection, frame) -> None:
        self._blocked = True
        log.warning("broker blocks publishers", reason=getattr(frame.method, "reason", ""))

    def _on_unblocked(self, _connection, _frame) -> None:
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
        self._closed.set()
        if self._stopping:
            return
        node = broker.address(self._nodes.current)
        delay = self._nodes.failed()
        log.warning("broker connection lost" if was_ready else "broker unreachable", node=node,
                    reason=why[:200], retry_in_s=round(delay, 2), next_node=broker.address(self._nodes.current))
        gevent.spawn_later(delay, self._connect)

    def _fail_all(self, error: PublishError) -> None:
        self._ready.clear()
        self._blocked = False
        pending, self._pending = self._pending, OrderedDict()
        for entry in pending.values():
            entry.confirms.settle(entry.index, error=error)
        replies, self._replies = self._replies, {}
        for reply in replies.values():
            reply.settle(error=error)

