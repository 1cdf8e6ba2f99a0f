"""Publishing a batch of messages and knowing the broker took every one (publisher confirms)."""
from __future__ import annotations

from dataclasses import dataclass

import pika

from shared import broker, pika_internals


class Unroutable(Exception):
    """The broker returned a mandatory message: no queue is bound for it."""


@dataclass(frozen=True)
class Message:
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool = False


class Nacked(Exception):
    """The broker refused a message (basic.nack): it was not enqueued."""


class BatchPublisher:
    """One channel in confirm mode: a batch returns once the broker confirmed every message, or raises.

    Not an AMQP transaction, though it costs the same one round trip per batch: RabbitMQ 3.10 answers
    tx.commit-ok for a message a quorum queue refused (a channel that first published to the queue
    while its leader's node was down keeps refusing), and the message is gone
    (tests/test_cluster_failover.py). With confirms the refusal is a basic.nack. Returns for
    mandatory messages arrive before their ack.
    """

    def __init__(self, url: str, name: str = "spotter-publisher", heartbeat_s: int = 30):
        self._url, self._name, self._heartbeat = url, name, heartbeat_s
        self._connection = None
        self._channel = None
        self._returned: list[str] = []
        self._batched = False          # our own confirm callback (pika_internals), else one at a time
        self._unconfirmed: set[int] = set()
        self._next_tag = 1
        self._nacked = 0

    def _open(self):
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        self._connection = broker.connect(self._url, heartbeat_s=self._heartbeat, client_name=self._name)
        self._channel = self._connection.channel()
        self._channel.add_on_return_callback(
            lambda _ch, method, props, _body: self._returned.append(props.message_id or method.routing_key))
        self._unconfirmed, self._next_tag, self._nacked = set(), 1, 0
        self._batched = pika_internals.confirm_select(self._channel, self._on_confirm)
        if not self._batched:
            self._channel.confirm_delivery()
        return self._channel

    def _on_confirm(self, frame) -> None:
        method = frame.method
        tags = ({t for t in self._unconfirmed if t <= method.delivery_tag} if method.multiple
                else {method.delivery_tag} & self._unconfirmed)
        self._unconfirmed -= tags
        if isinstance(method, pika.spec.Basic.Nack):
            self._nacked += len(tags)

    def publish(self, messages: list[Message]) -> None:
        """Publish all or raise. Tried again once on a new connection when the connection died while
        idle (its heartbeats unanswered during a long handler) or the broker refused a message: the
        channel that was refused may stay refused (see the class), and a repeat is deduplicated."""
        try:
            self._publish(messages)
        except (*broker.CONNECTION_ERRORS, Nacked):
            self._publish(messages)

    def _publish(self, messages: list[Message]) -> None:
        if not messages:
            return
        channel = self._open()
        self._returned.clear()
        try:
            for m in messages:
                if self._batched:  # queued without a flush each: the wait for confirms sends them all
                    pika_internals.queue_publish(channel, m.exchange, m.routing_key, m.body, m.properties, m.mandatory)
                    self._unconfirmed.add(self._next_tag)
                    self._next_tag += 1
                    continue
                try:
                    channel.basic_publish(m.exchange, m.routing_key, m.body, m.properties, m.mandatory)
                except pika.exceptions.UnroutableError:
                    self._returned.append(m.properties.message_id or m.routing_key)
                except pika.exceptions.NackError:
                    self._nacked += 1
            if self._batched:
                pika_internals.await_confirms(channel, lambda: not self._unconfirmed)
            self._connection.process_data_events(0)  # dispatch returns received before their ack
        except broker.CONNECTION_ERRORS:
            self.close()
            raise
        if self._nacked:
            count, self._nacked = self._nacked, 0
            self.close()
            raise Nacked(f"the broker refused {count} of {len(messages)} message(s)")
        if self._returned:
            raise Unroutable(f"no queue bound for {len(self._returned)} message(s): {self._returned[:5]}")

    def keepalive(self) -> None:
        """Let heartbeats through while idle."""
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.process_data_events(0)
            except broker.CONNECTION_ERRORS:
                self.close()

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # closing a broken connection: nothing left to save
                pass
