"""Exchanges, queues and bindings, declared idempotently (DESIGN §4).

Per worker W:
  W             quorum queue bound to app.events with W's routing keys; delivery limit;
                dead-letters at-least-once to app.dead (routing key W)
  W.retry.<n>s  quorum queue with a fixed TTL that dead-letters back to W: one queue per delay
                because RabbitMQ only expires messages at the head of a queue
  W.dead        where poison messages rest, with reason and attempts in their headers; quorum,
                bounded (DEAD_LETTER_MAX_BYTES, DEAD_LETTER_MAX_MESSAGES) with drop-head overflow:
                one account's flood of poison messages pushes out the oldest dead letters instead
                of filling the broker's disk (whose alarm would block every publisher). Not
                reject-publish: the runtime's dead-letter publish would be nacked and the broker's
                at-least-once dead-lettering would keep the messages in W, which has no bound.
  W.queries     classic, non-durable queue bound to app.queries with W's query names: answers
                a caller is waiting for (reads, passcode checks). Messages are transient and
                expire (x-message-ttl), nothing is dead-lettered: once nobody waits, it is gone.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass

import pika

from shared import pika_internals
from shared.config import DeadLetterBounds
from shared.logging import log

DEAD_EXCHANGE = "app.dead"
QUERY_EXCHANGE = "app.queries"
QUERY_TTL_MS = 10_000        # longer than any caller waits (the ingress waits 5 s)
QUERY_MAX_LENGTH = 1_000     # a full queue refuses new queries (the caller answers 503 at once)
# For a W.dead declared before it had a bound (arguments cannot change on an existing queue): an
# operator policy bounds it in place (the lower of policy and argument applies), see
# dead_letter_policy_command().
DEAD_LETTER_POLICY = "spotter-dead-letter-bounds"
DEAD_LETTER_POLICY_PATTERN = r"^[^.]+\.dead$"


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


def dead_queue_arguments(bounds: DeadLetterBounds) -> dict:
    return {
        "x-queue-type": "quorum",
        "x-max-length-bytes": bounds.max_bytes,
        "x-max-length": bounds.max_messages,
        "x-overflow": "drop-head",  # keep the newest; see the module docstring
    }


def dead_letter_policy_command(bounds: DeadLetterBounds, vhost: str = "/") -> str:
    """The command that bounds existing W.dead queues in place, without recreating them."""
    definition = f'{{"max-length-bytes":{bounds.max_bytes},"max-length":{bounds.max_messages}}}'
    return (f"rabbitmqctl set_operator_policy -p {shlex.quote(vhost)} {DEAD_LETTER_POLICY} "
            f"{shlex.quote(DEAD_LETTER_POLICY_PATTERN)} {shlex.quote(definition)} --apply-to queues")


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
                   delivery_limit: int, retry_delays_s, dead_bounds: DeadLetterBounds | None = None) -> QueueNames:
    """Declare W, its retry queues and W.dead, and bind W to its event types.

    `dead_bounds` defaults to DEAD_LETTER_MAX_BYTES / DEAD_LETTER_MAX_MESSAGES from the environment."""
    names = QueueNames(worker)
    declare_exchanges(channel, exchange)
    declare_dead(channel, names, dead_bounds or DeadLetterBounds.from_env())
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


def declare_dead(channel, names: QueueNames, bounds: DeadLetterBounds) -> bool:
    """Declare W.dead with its bound; True when it has these arguments.

    A W.dead declared before it had a bound (or with other DEAD_LETTER_MAX_* values) refuses the
    new arguments (PRECONDITION_FAILED). That queue is kept as it is, with its dead letters, and a
    warning names the fix: the worker must not stop consuming over its dead-letter queue. The
    declare runs on a channel of its own because a refusal closes the channel it came on."""
    arguments = dead_queue_arguments(bounds)
    connection = getattr(channel, "connection", None)
    side = connection.channel() if connection is not None else channel
    try:
        side.queue_declare(names.dead, durable=True, arguments=arguments)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406 or side is channel:
            raise
        vhost = pika_internals.virtual_host(connection)
        fix = (f"bound it in place: {dead_letter_policy_command(bounds, vhost)} (then `workers status` shows "
               f"its bound); or, to declare it anew with these arguments, empty it (`workers dlq replay|purge "
               f"{names.worker}`), delete it (`rabbitmqctl delete_queue -p {shlex.quote(vhost)} {names.dead}`) "
               f"and run `workers topology`")
        log.bind(worker=names.worker, queue=names.dead, broker=exc.reply_text, fix=fix).warning(
            f"dead-letter queue {names.dead} exists with other arguments than DEAD_LETTER_MAX_BYTES / "
            f"DEAD_LETTER_MAX_MESSAGES ask for; kept as it is. Unless a policy bounds it, a flood of dead "
            f"letters can fill the broker's disk. Fix: {fix}")
        return False
    finally:
        if side is not channel and side.is_open:
            side.close()


class TopologyMismatch(RuntimeError):
    """A queue exists with arguments that break our delivery guarantees."""
