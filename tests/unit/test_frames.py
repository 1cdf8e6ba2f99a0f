"""shared/frames.py writes exactly the bytes pika's own basic_publish would put on the wire."""
from __future__ import annotations

import math
import time

import pika
import pytest
from pika import frame, spec

from shared import frames
from shared import broker
from shared.envelope import new_event

BODY_MAX = 131072 - 8  # frame_max 128 KiB less the frame overhead, as pika computes it


def pika_bytes(channel, exchange, routing_key, body, props, body_max=BODY_MAX) -> bytes:
    """Connection._send_message's frames for Channel.basic_publish(..., mandatory=True)."""
    parts = [frame.Method(channel, spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                      mandatory=True)).marshal(),
             frame.Header(channel, len(body), props).marshal()]
    for chunk in range(int(math.ceil(len(body) / body_max))):
        parts.append(frame.Body(channel, body[chunk * body_max:(chunk + 1) * body_max]).marshal())
    return b"".join(parts)


EVENT = new_event("user.settings.submitted", "7c9e6679-7425-40de-944b-e07fc1f90ae7", {"age": 28}, "frontend")
CASES = {
    "event": broker.event_properties(EVENT),
    "event with trace": broker.event_properties(EVENT, {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}),
    "request-reply": pika.BasicProperties(message_id=EVENT.id, type="media.upload_requested", delivery_mode=2,
                                          content_type="application/json", timestamp=int(time.time()),
                                          headers={"schema_version": "1.0.0", "source_service": "frontend"},
                                          reply_to="amq.rabbitmq.reply-to", correlation_id=EVENT.id),
    "query": pika.BasicProperties(content_type="application/json", delivery_mode=1, type="feed.page",
                                  correlation_id="c0ffee", reply_to="amq.rabbitmq.reply-to", expiration="5000"),
    "unicode": pika.BasicProperties(type="ünïcode.event", headers={"clé": "välue ✓", "": ""}),
    "no properties": pika.BasicProperties(),
    "empty headers": pika.BasicProperties(headers={}),
    # header tables with other value types, and the remaining property fields
    "int header": pika.BasicProperties(headers={"attempt": 3, "nested": {"a": "b"}}),
    "priority": pika.BasicProperties(priority=5, app_id="spotter", content_encoding="gzip"),
    "bytes type": pika.BasicProperties(type=b"raw", message_id="x" * 200),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("size", [0, 1, 330, BODY_MAX, BODY_MAX + 1, 3 * BODY_MAX + 17])
def test_publish_frames_are_pikas(name, size):
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    props = CASES[name]
    assert frames.publish(1, "app.events", "user.settings.submitted", body, props, BODY_MAX) \
        == pika_bytes(1, "app.events", "user.settings.submitted", body, props)


def test_another_channel_and_exchange_get_their_own_method_frame():
    props = CASES["event"]
    for channel, exchange, key in ((2, "app.events", "a.b"), (1, "app.queries", "feed.page"), (1, "", "q")):
        assert frames.publish(channel, exchange, key, b"{}", props, BODY_MAX) \
            == pika_bytes(channel, exchange, key, b"{}", props)


@pytest.mark.parametrize("headers", [None, {}, {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}])
@pytest.mark.parametrize("event", [
    EVENT,
    new_event("app.settings.updated", "7c9e6679-7425-40de-944b-e07fc1f90ae7", {}, "admin-ümlaut"),
])
def test_encoded_event_properties_are_pikas(event, headers):
    timestamp = int(time.time())
    props = broker.event_properties(event, headers)
    props.timestamp = timestamp
    assert frames.event_properties(event, headers, timestamp) == b"".join(props.encode())
    body = event.to_json()
    assert frames.publish(1, "app.events", event.event_type, body, frames.event_properties(event, headers, timestamp),
                          BODY_MAX) == pika_bytes(1, "app.events", event.event_type, body, props)


def test_an_event_property_too_long_for_amqp_is_refused_not_truncated():
    event = new_event("x" * 256, "7c9e6679-7425-40de-944b-e07fc1f90ae7", {}, "frontend")
    with pytest.raises(ValueError, match="255"):
        frames.event_properties(event)
