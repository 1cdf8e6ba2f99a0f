"""Talking to the workers over RabbitMQ as the ingress and the app do: publishing events on
app.events, and reading what the workers emit or dead-letter."""
from __future__ import annotations

import orjson

from tests.support.events import dumps, event
from tests.support.rabbit import wait_for


def publish_body(rmq, body: dict, **props) -> dict:
    """Publish an event as the ingress does: routing key and type = event type, message id = its id."""
    rmq.publish("app.events", body["event_type"], dumps(body), message_id=body["client_generated_id"],
                type=body["event_type"], **props)
    return body


def publish(rmq, event_type: str, data: dict, user: str, *, props: dict | None = None, **envelope) -> dict:
    """A new event of `user` (envelope fields overridable), published; its body."""
    return publish_body(rmq, event(event_type, data=data, user_id=user, **envelope), **(props or {}))


def outcomes(rmq, queue: str, count: int = 1) -> list[dict]:
    """The `count` (or more) events waiting on `queue`, parsed, once they are there."""
    wait_for(lambda: rmq.depth(queue) >= count, message=f"{count} message(s) on {queue}")
    return [orjson.loads(body) for _, body in rmq.drain(queue)]


def dead_letters(rmq, worker: str, count: int) -> dict[str, dict]:
    """message_id → headers of the `count` (or more) messages `worker` dead-lettered (`<worker>.dead`)."""
    wait_for(lambda: rmq.depth(f"{worker}.dead") >= count, message=f"{count} dead letter(s) of {worker}")
    return {p.message_id: p.headers for p, _ in rmq.drain(f"{worker}.dead")}
