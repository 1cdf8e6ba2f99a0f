"""Exchanges, queues and bindings, declared idempotently (DESIGN §4).

Per worker W:
  W             quorum queue bound to app.events with W's routing keys; delivery limit;
                dead-letters at-least-once to app.dead (routing key W)
  W.retry.<n>s  quorum queue with a fixed TTL that dead-letters back to W: one queue per delay
                because RabbitMQ only expires messages at the head of a queue
  W.dead        where poison messages rest, with reason and attempts in their headers
  W.queries     classic, non-durable queue bound to app.queries with W's query names: answers
                a caller is waiting for (reads, passcode checks). Messages are transient and
                expire (x-message-ttl), nothing is dead-lettered: once nobody waits, it is gone.
"""
from __future__ import annotations

from dataclasses import dataclass

DEAD_EXCHANGE = "app.dead"
QUERY_EXCHANGE = "app.queries"
QUERY_TTL_MS = 10_000        # longer than any caller waits (the ingress waits 5 s)
QUERY_MAX_LENGTH = 1_000     # a full queue refuses new queries (the caller answers 503 at once)


@dataclass(frozen=True)
class QueueNames:
    worker: str

    @property
    def main(self) -> str:
        return self.worker

    @property
    def dead(self) -> str:
        return f"{self.worker}.dead"

    @property
    def queries(self) -> str:
        return f"{self.worker}.queries"

    def retry(self, delay_s: int) -> str:
        return f"{self.worker}.retry.{delay_s}s"


def main_queue_arguments(names: QueueNames, delivery_limit: int) -> dict:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_EXCHANGE,
        "x-dead-letter-routing-key": names.worker,
        # at-least-once dead-lettering needs reject-publish overflow
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def declare_exchanges(channel, exchange: str) -> None:
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(DEAD_EXCHANGE, exchange_type="direct", durable=True)
    channel.exchange_declare(QUERY_EXCHANGE, exchange_type="direct", durable=True)


QUERY_QUEUE_ARGUMENTS = {"x-queue-type": "classic", "x-message-ttl": QUERY_TTL_MS,
                         "x-max-length": QUERY_MAX_LENGTH, "x-overflow": "reject-publish"}


def declare_queries(channel, worker: str, query_names, exchange: str) -> QueueNames:
    """Declare W.queries and bind it to W's query names (no-op for a worker without queries)."""
    names = QueueNames(worker)
    if not query_names:
        return names
    declare_exchanges(channel, exchange)
    channel.queue_declare(names.queries, durable=False, arguments=QUERY_QUEUE_ARGUMENTS)
    for key in sorted(query_names):
        channel.queue_bind(names.queries, QUERY_EXCHANGE, routing_key=key)
    return names


def declare_worker(channel, worker: str, routing_keys, exchange: str,
                   delivery_limit: int, retry_delays_s) -> QueueNames:
    """Declare W, its retry queues and W.dead, and bind W to its event types."""
    names = QueueNames(worker)
    declare_exchanges(channel, exchange)
    channel.queue_declare(names.dead, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(names.dead, DEAD_EXCHANGE, routing_key=names.worker)
    channel.queue_declare(names.main, durable=True,
                          arguments=main_queue_arguments(names, delivery_limit))
    for key in sorted(routing_keys):
        channel.queue_bind(names.main, exchange, routing_key=key)
    for delay in retry_delays_s:
        channel.queue_declare(names.retry(delay), durable=True, arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": delay * 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": names.main,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        })
    return names


class TopologyMismatch(RuntimeError):
    """A queue exists with arguments that break our delivery guarantees."""
