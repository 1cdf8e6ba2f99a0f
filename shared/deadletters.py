"""Reading and repairing a worker's dead-letter queue (`workers dlq …`)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pika

from shared.topology import QueueNames

_DEAD_HEADERS = ("x-dead-reason", "x-dead-detail", "x-dead-exception", "x-dead-worker", "x-dead-at",
                 "x-dead-field", "x-last-error", "x-attempts", "x-death", "x-first-death-exchange",
                 "x-first-death-queue", "x-first-death-reason", "x-delivery-count", "x-original-routing-key")


@dataclass
class DeadLetter:
    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes

    @property
    def headers(self) -> dict:
        return self.properties.headers or {}

    @property
    def reason(self) -> str:
        # our own dead letters say why; the broker's (delivery limit) carry x-first-death-reason
        return str(self.headers.get("x-dead-reason") or self.headers.get("x-first-death-reason") or "unknown")

    @property
    def event_type(self) -> str:
        return self.properties.type or "?"

    def summary(self) -> dict:
        return {"message_id": self.properties.message_id, "event_type": self.event_type,
                "reason": self.reason, "detail": self.headers.get("x-dead-detail"),
                "field": self.headers.get("x-dead-field"), "attempts": self.headers.get("x-attempts"),
                "dead_at": self.headers.get("x-dead-at")}


class DeadLetterQueue:
    """Peeks hold messages unacked on one channel; closing without ack puts them back in order."""

    def __init__(self, connection: pika.BlockingConnection, worker: str):
        self.names = QueueNames(worker)
        self.connection = connection
        self.channel = connection.channel()

    def peek(self, limit: int = 10_000) -> list[DeadLetter]:
        letters = []
        while len(letters) < limit:
            method, props, body = self.channel.basic_get(self.names.dead, auto_ack=False)
            if method is None:
                break
            letters.append(DeadLetter(method.delivery_tag, props, body))
        return letters

    def groups(self, letters: list[DeadLetter]) -> Counter:
        return Counter((d.reason, d.event_type) for d in letters)

    def replay(self, letters: list[DeadLetter]) -> int:
        """Send back to the worker's own queue (not the exchange: other workers already have it)."""
        self.channel.tx_select()
        for d in letters:
            headers = {k: v for k, v in d.headers.items() if k not in _DEAD_HEADERS}
            headers["x-replayed"] = int(d.headers.get("x-replayed", 0)) + 1
            props = pika.BasicProperties(content_type=d.properties.content_type, delivery_mode=2,
                                         message_id=d.properties.message_id, type=d.properties.type,
                                         timestamp=d.properties.timestamp, headers=headers)
            self.channel.basic_publish("", self.names.main, d.body, props)
            self.channel.basic_ack(d.delivery_tag)
        self.channel.tx_commit()
        return len(letters)

    def purge(self, letters: list[DeadLetter]) -> int:
        for d in letters:
            self.channel.basic_ack(d.delivery_tag)
        return len(letters)

    def release(self) -> None:
        """Put back everything peeked and not acked."""
        if self.channel.is_open:
            self.channel.close()
