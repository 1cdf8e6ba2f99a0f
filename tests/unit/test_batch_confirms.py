"""The worker publisher's bookkeeping of publisher confirms (workers/runtime/publisher.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pika

from workers.runtime.publisher import BatchPublisher


def frame(method):
    return SimpleNamespace(method=method)


def test_acks_and_nacks_settle_their_tags_single_or_multiple():
    publisher = BatchPublisher("amqp://127.0.0.1:5672/%2F")
    publisher._unconfirmed = {1, 2, 3, 4, 5}
    publisher._on_confirm(frame(pika.spec.Basic.Ack(delivery_tag=2, multiple=True)))
    assert publisher._unconfirmed == {3, 4, 5} and publisher._nacked == 0
    publisher._on_confirm(frame(pika.spec.Basic.Nack(delivery_tag=4, multiple=False)))
    assert publisher._unconfirmed == {3, 5} and publisher._nacked == 1
    publisher._on_confirm(frame(pika.spec.Basic.Ack(delivery_tag=4, multiple=False)))  # already settled
    assert publisher._unconfirmed == {3, 5}
    publisher._on_confirm(frame(pika.spec.Basic.Nack(delivery_tag=5, multiple=True)))
    assert publisher._unconfirmed == set() and publisher._nacked == 3
