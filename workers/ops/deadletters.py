"""Reading and repairing a worker's dead-letter queue (`workers dlq …`).

AMQP has no "browse": a peek takes messages with basic_get and holds them unacked on one
channel; closing the channel puts every one not acked back. That is fine up to a limit (the
broker keeps them in memory for this channel), so a peek stops at `limit` and says how many it
left in the queue: run the command again after a replay or purge to reach the rest.

W.dead is bounded (shared/topology.py: DEAD_LETTER_MAX_BYTES, DEAD_LETTER_MAX_MESSAGES, drop-head):
`bound_report()` tells `workers status` and `bin/pod-health-check` how full it is.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pika

from shared.topology import QueueNames

DEFAULT_LIMIT = 10_000
NEAR_BOUND_PERCENT = 80  # from here on `workers status` warns and `bin/pod-health-check` fails

# What the runtime and the broker add when a message dies; a replayed message starts clean
# (its attempt count included), and only says how often it was replayed.
_DEAD_HEADERS = ("x-dead-reason", "x-dead-detail", "x-dead-exception", "x-dead-worker", "x-dead-at",
                 "x-dead-field", "x-last-error", "x-attempts", "x-death", "x-first-death-exchange",
                 "x-first-death-queue", "x-first-death-reason", "x-delivery-count", "x-original-routing-key",
                 "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")


class ReplayStopped(Exception):
    """The broker refused a republish (queue full, unroutable): `done` went through, the rest stay."""

    def __init__(self, done: int, error: str):
        super().__init__(f"stopped after {done} message(s): {error}")
        self.done = done


@dataclass
class DeadLetter:
    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes

    @property
    def headers(self) -> dict:
        return self.properties.headers or {}

    @property
    def message_id(self) -> str | None:
        return self.properties.message_id

    @property
    def reason(self) -> str:
        # our own dead letters say why; the broker's (delivery limit) carry x-first-death-reason
        return _text(self.headers.get("x-dead-reason") or self.headers.get("x-first-death-reason") or "unknown")

    @property
    def event_type(self) -> str:
        return self.properties.type or "?"

    def summary(self) -> dict:
        h = self.headers
        return {"message_id": self.message_id, "event_type": self.event_type, "reason": self.reason,
                "detail": _text(h.get("x-dead-detail")), "field": _text(h.get("x-dead-field")),
                "attempts": h.get("x-attempts"), "replayed": h.get("x-replayed", 0),
                "dead_at": _text(h.get("x-dead-at"))}


def _text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def select(letters: list[DeadLetter], message_id=None, reason=None, event_type=None) -> list[DeadLetter]:
    """Those matching every selector given (none given: all)."""
    return [d for d in letters
            if (not message_id or d.message_id == message_id)
            and (not reason or d.reason == reason) and (not event_type or d.event_type == event_type)]


class DeadLetterQueue:
    """Peeks hold messages unacked on one channel; closing without ack puts them back."""

    def __init__(self, connection: pika.BlockingConnection, worker: str):
        self.names = QueueNames(worker)
        self.connection = connection
        self.channel = connection.channel()
        self._confirming = False
        self.total = 0  # messages in W.dead when opened (set by the caller with depth())

    def depth(self) -> int:
        """Messages waiting in W.dead (those this channel holds not included)."""
        channel = self.connection.channel()
        try:
            return channel.queue_declare(self.names.dead, passive=True).method.message_count
        finally:
            if channel.is_open:
                channel.close()

    def peek(self, limit: int = DEFAULT_LIMIT, message_id: str | None = None) -> list[DeadLetter]:
        """Up to `limit` messages, held unacked; with `message_id`, stop at that one."""
        letters = []
        while len(letters) < limit:
            method, props, body = self.channel.basic_get(self.names.dead, auto_ack=False)
            if method is None:
                break
            letters.append(DeadLetter(method.delivery_tag, props, body))
            if message_id and props.message_id == message_id:
                break
        return letters

    @staticmethod
    def groups(letters: list[DeadLetter]) -> Counter:
        return Counter((d.reason, d.event_type) for d in letters)

    def replay(self, letters: list[DeadLetter]) -> int:
        """Send back to the worker's own queue (not the exchange: other workers already have it).

        Each dead letter is acked only once the broker confirmed its republish, so a failure
        midway loses nothing; at worst one message exists twice, which idempotency absorbs."""
        if not self._confirming:
            self.channel.confirm_delivery()
            self._confirming = True
        done = 0
        for d in letters:
            try:
                self.channel.basic_publish("", self.names.main, d.body, replay_properties(d), mandatory=True)
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                raise ReplayStopped(done, f"{type(exc).__name__}: the broker did not take the message "
                                          f"for {self.names.main!r} (missing or full?)") from None
            self.channel.basic_ack(d.delivery_tag)
            done += 1
        return done

    def purge(self, letters: list[DeadLetter]) -> int:
        for d in letters:
            self.channel.basic_ack(d.delivery_tag)
        return len(letters)

    def close(self) -> None:
        """Put back everything peeked and not acked."""
        if self.connection.is_open:
            self.connection.close()


def replay_properties(d: DeadLetter) -> pika.BasicProperties:
    headers = {k: v for k, v in d.headers.items() if k not in _DEAD_HEADERS}
    headers["x-replayed"] = int(d.headers.get("x-replayed", 0)) + 1
    p = d.properties
    return pika.BasicProperties(content_type=p.content_type, content_encoding=p.content_encoding, delivery_mode=2,
                                message_id=p.message_id, type=p.type, timestamp=p.timestamp,
                                correlation_id=p.correlation_id, app_id=p.app_id, headers=headers)


# ---- how full W.dead is (management API readings) ------------------------------------------------

def effective_bound(info: dict) -> dict | None:
    """The bound RabbitMQ applies to a queue, from its management API info: per dimension the lower
    of queue argument and policy (operator policies merged in), the policy's overflow before the
    argument's (quorum queues); None when nothing bounds it."""
    args, policy = info.get("arguments") or {}, info.get("effective_policy_definition") or {}
    sources = set()

    def lowest(argument: str, key: str):
        values = []
        for source, value in (("argument", args.get(argument)), ("policy", policy.get(key))):
            if isinstance(value, int) and not isinstance(value, bool):
                values.append(value)
                sources.add(source)
        return min(values) if values else None

    max_messages, max_bytes = lowest("x-max-length", "max-length"), lowest("x-max-length-bytes", "max-length-bytes")
    if max_messages is None and max_bytes is None:
        return None
    return {"max_messages": max_messages, "max_bytes": max_bytes,
            "overflow": policy.get("overflow") or args.get("x-overflow") or "drop-head",
            "source": "+".join(sorted(sources))}


def _percent(value: int, bound: int | None) -> float | None:
    return None if bound is None else round(100.0 * value / bound, 1)


def bound_report(names: QueueNames, ready: int | None, info: dict | None, fix: str) -> dict:
    """How full W.dead is, for `workers status` (JSON fields) and the health check.

    `ready` is the exact count from a passive declare; bytes come from the management API (a few
    seconds late). Both count ready messages only, as the broker's bound does (a `workers dlq`
    peek holds messages unacked). `info` None: management API unavailable, nothing known.
    `fix`: the command to bound an unbounded queue."""
    report = {"dead_bytes": None, "dead_bound": None, "dead_bounded": None, "dead_used_percent": None,
              "dead_near_bound": None, "dead_warning": None}
    if info is None or ready is None:
        return report
    bound = effective_bound(info)
    report.update(dead_bytes=info.get("message_bytes_ready", 0), dead_bound=bound, dead_bounded=bound is not None)
    if bound is None:
        report["dead_warning"] = (f"{names.dead} has no length bound: a flood of dead letters can fill the "
                                  f"broker's disk and block every publisher. Fix: {fix}")
        return report
    used = {"messages": _percent(ready, bound["max_messages"]),
            "bytes": _percent(report["dead_bytes"], bound["max_bytes"])}
    fullest = max((v, k) for k, v in used.items() if v is not None)
    report.update(dead_used_percent=used, dead_near_bound=fullest[0] >= NEAR_BOUND_PERCENT)
    warnings = []
    if report["dead_near_bound"]:
        what = (f"{ready}/{bound['max_messages']} messages" if fullest[1] == "messages"
                else f"{report['dead_bytes']}/{bound['max_bytes']} bytes")
        warnings.append(f"{names.dead} is at {fullest[0]:g}% of its bound ({what}): beyond it the oldest dead "
                        f"letters are dropped. Look with `workers dlq list {names.worker}`, then replay or purge")
    if bound["overflow"] != "drop-head":
        warnings.append(f"{names.dead} overflows with {bound['overflow']!r}: once full, poison messages stay in "
                        f"{names.main}, which has no bound; want 'drop-head' (clear the policy that sets it)")
    report["dead_warning"] = "; ".join(warnings) or None
    return report
