"""The bytes of one basic.publish (mandatory): method, header and body frames, as pika sends them.

pika's Channel.basic_publish builds a Basic.Publish object and three frame objects per message
and queues each frame on its own. The method frame is the same for every message to one
routing key, so it is marshalled once (cached); the header frame is pika's own marshalling, or
for an event's properties (`event_properties`) a cached prefix and three fields; the body frames
are packed directly; all three leave as one buffer. tests/ingress/test_frames.py checks the
bytes against pika's.
"""
from __future__ import annotations

import struct
import time
from functools import lru_cache

from pika import frame, spec

from shared import broker
from shared.envelope import Envelope

_FRAME_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_FRAME_END = bytes((spec.FRAME_END,))
_CONTENT_HEAD = struct.Struct(">HxxQ")  # class id (basic), weight (0), body size
_TIMESTAMP = struct.Struct(">Q")
_P = spec.BasicProperties
# the properties broker.event_properties sets, in their wire order (message_id onwards vary)
_EVENT_FLAGS = struct.pack(">H", _P.FLAG_CONTENT_TYPE | _P.FLAG_HEADERS | _P.FLAG_DELIVERY_MODE
                           | _P.FLAG_MESSAGE_ID | _P.FLAG_TIMESTAMP | _P.FLAG_TYPE)


@lru_cache(maxsize=1024)
def method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    return frame.Method(channel, spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                    mandatory=True)).marshal()


@lru_cache(maxsize=256)
def _event_prefix(content_type: str, headers: tuple, delivery_mode: int) -> bytes:
    """The fields before message_id, as pika encodes them (its flag word left out)."""
    return b"".join(_P(content_type=content_type, headers=dict(headers), delivery_mode=delivery_mode).encode()[1:])


def _short_string(value: str) -> bytes:
    encoded = value.encode()
    if len(encoded) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {value[:40]!r}…")
    return bytes((len(encoded),)) + encoded


def event_properties(event: Envelope, headers: dict | None = None, timestamp: int | None = None) -> bytes:
    """broker.event_properties(event, headers), encoded: pika's BasicProperties.encode(), joined.

    Only message_id, timestamp and type change from one event to the next; the rest is cached
    (pika's encoder walks all fourteen properties and the header table every time).
    """
    prefix = _event_prefix(broker.CONTENT_TYPE, (("schema_version", event.schema_version),
                                                 ("source_service", event.source_service),
                                                 *(headers.items() if headers else ())), broker.PERSISTENT)
    return b"".join((_EVENT_FLAGS, prefix, _short_string(event.id),
                     _TIMESTAMP.pack(int(time.time()) if timestamp is None else timestamp),
                     _short_string(event.event_type)))


def publish(channel: int, exchange: str, routing_key: str, body: bytes,
            properties: spec.BasicProperties | bytes, body_max: int) -> bytes:
    """All frames of one message; bodies split every `body_max` bytes (frame_max less 8).

    `properties` is a BasicProperties, or bytes from event_properties().
    """
    if isinstance(properties, bytes):
        payload = _CONTENT_HEAD.pack(_P.INDEX, len(body)) + properties
        header = _FRAME_HEAD.pack(spec.FRAME_HEADER, channel, len(payload)) + payload + _FRAME_END
    else:
        header = frame.Header(channel, len(body), properties).marshal()
    parts = [method_frame(channel, exchange, routing_key), header]
    for start in range(0, len(body), body_max):
        chunk = body[start:start + body_max]
        parts.append(_FRAME_HEAD.pack(spec.FRAME_BODY, channel, len(chunk)) + chunk + _FRAME_END)
    return b"".join(parts)
