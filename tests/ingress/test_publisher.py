"""The ingress's publisher on the real broker, driven from gevent's hub as under gunicorn.

What the HTTP tests cannot reach easily: a message larger than one AMQP frame (the publisher
writes its frames itself) and many greenlets confirming on one connection at once.
"""
from __future__ import annotations

import os
import uuid

import gevent
import pika
import pytest

from shared import frames
from ingress.publisher import CONFIRMED, FLUSH_AT_BYTES, UNROUTABLE, Publisher
from shared import pika_internals
from shared.envelope import new_event
from workers.runtime.publisher import BatchPublisher, Message, Unroutable

EXCHANGE = "app.events"


@pytest.fixture
def publisher(vhost, rmq):
    rmq.channel.queue_declare("out", durable=True)
    rmq.channel.queue_bind("out", EXCHANGE, routing_key="user.#")
    p = Publisher(vhost, declare_exchanges=((EXCHANGE, "topic"),)).start()
    assert p.wait_ready(10), "the publisher did not connect"
    yield p
    p.close()


def _props(message_id: str) -> pika.BasicProperties:
    return pika.BasicProperties(message_id=message_id, type="user.settings.submitted", delivery_mode=2,
                                content_type="application/json", headers={"source_service": "frontend"})


def _drain(rmq, count: int) -> dict[str, tuple[pika.BasicProperties, bytes]]:
    got = {}
    for _ in range(count):
        method, props, body = rmq.channel.basic_get("out", auto_ack=True)
        assert method is not None, f"only {len(got)} of {count} messages in the queue"
        got[props.message_id] = (props, body)
    return got


def test_a_body_larger_than_a_frame_arrives_whole(publisher, rmq):
    # frame_max is 128 KiB: this body travels as three body frames after the header
    body = os.urandom(300_000)
    small = b'{"tiny": true}'
    assert publisher.confirm([(EXCHANGE, "user.settings.submitted", body, _props("big")),
                              (EXCHANGE, "user.settings.submitted", small, _props("small"))], 10) \
        == [CONFIRMED, CONFIRMED]
    got = _drain(rmq, 2)
    assert got["big"][1] == body and got["small"][1] == small
    assert got["big"][0].headers == {"source_service": "frontend"} and got["big"][0].delivery_mode == 2


def test_many_greenlets_each_get_their_own_confirms(publisher, rmq):
    ids = [str(uuid.uuid4()) for _ in range(400)]

    def post(message_id):
        key = "user.settings.submitted" if int(message_id[-1], 16) % 4 else "nobody.listens"
        result, = publisher.confirm([(EXCHANGE, key, message_id.encode(), _props(message_id))], 10)
        return key, result

    jobs = [gevent.spawn(post, i) for i in ids]
    gevent.joinall(jobs, raise_error=True)
    results = {i: job.value for i, job in zip(ids, jobs)}
    routed = [i for i, (key, _) in results.items() if key.startswith("user.")]
    # every unroutable message comes back as such, every routed one is confirmed and queued
    assert all(r == (UNROUTABLE if not k.startswith("user.") else CONFIRMED) for k, r in results.values())
    got = _drain(rmq, len(routed))
    assert sorted(got) == sorted(routed) and all(body == i.encode() for i, (_, body) in got.items())
    assert rmq.channel.basic_get("out", auto_ack=True)[0] is None


def test_a_batch_sent_in_several_flushes_arrives_whole_and_in_order(publisher, rmq):
    # 100 events of ~600 B: the publisher sends every FLUSH_AT_BYTES instead of once per hub pass
    ids = [str(uuid.uuid4()) for _ in range(100)]
    assert 100 * 600 > 3 * FLUSH_AT_BYTES
    messages = [(EXCHANGE, "user.settings.submitted", (i * 16).encode(), _props(i)) for i in ids]
    assert publisher.confirm(messages, 10) == [CONFIRMED] * 100
    order = [rmq.channel.basic_get("out", auto_ack=True)[1].message_id for _ in ids]
    assert order == ids and rmq.channel.basic_get("out", auto_ack=True)[0] is None


# ---- shared/pika_internals.py: pika's public API when the private path is off ---------------
@pytest.fixture
def public_path(monkeypatch):
    """This process decides anew, and its self-check sees a Connection without a needed attribute."""
    from loguru import logger

    class OldConnection:  # a pika release without Connection._output_marshaled_frames
        pass

    monkeypatch.setattr(pika_internals, "FAST_PATH_ACTIVE", None)
    records = []
    sink = logger.add(lambda m: records.append(m.record), level="WARNING")
    assert pika_internals.self_check(required=((OldConnection, "_output_marshaled_frames"),
                                               *pika_internals.REQUIRED)) is False
    yield records
    logger.remove(sink)


def test_without_the_fast_path_publishes_are_confirmed_all_the_same(public_path, vhost, rmq):
    rmq.channel.queue_declare("out", durable=True)
    rmq.channel.queue_bind("out", EXCHANGE, routing_key="user.#")
    p = Publisher(vhost, declare_exchanges=((EXCHANGE, "topic"),)).start()
    try:
        assert p.wait_ready(10), "the publisher did not connect"
        body = os.urandom(300_000)  # pika splits it into frames itself now
        event = new_event("user.settings.submitted", str(uuid.uuid4()), {}, "frontend")
        encoded = frames.event_properties(event)  # what the ingress passes: decoded for pika's API
        assert p.confirm([(EXCHANGE, "user.settings.submitted", body, _props("big")),
                          (EXCHANGE, "user.settings.submitted", b"{}", encoded),
                          (EXCHANGE, "nobody.listens", b"{}", _props("lost"))], 10) \
            == [CONFIRMED, CONFIRMED, UNROUTABLE]
    finally:
        p.close()
    got = _drain(rmq, 2)
    assert got["big"][1] == body
    props = got[event.id][0]
    assert (props.type, props.delivery_mode, props.headers["source_service"]) == (event.event_type, 2, "frontend")
    assert pika_internals.FAST_PATH_ACTIVE is False
    assert [r["message"] for r in public_path] == ["pika fast path disabled, publishing through pika's public API"]


def test_without_the_fast_path_the_workers_batch_publisher_commits_all_the_same(public_path, vhost, rmq):
    rmq.channel.queue_declare("out", durable=True)
    rmq.channel.queue_bind("out", EXCHANGE, routing_key="user.#")
    publisher = BatchPublisher(vhost)
    try:
        publisher.publish([Message(EXCHANGE, "user.settings.submitted", b"{}", _props(f"m{i}")) for i in range(3)])
        with pytest.raises(Unroutable):
            publisher.publish([Message(EXCHANGE, "nobody.listens", b"{}", _props("lost"), mandatory=True)])
    finally:
        publisher.close()
    assert sorted(_drain(rmq, 3)) == ["m0", "m1", "m2"]
    assert len(public_path) == 1
