"""The bytes of one basic.publish (mandatory): method, header and body frames, as pika sends them.

pika builds a Basic.Publish object and three frame objects per message, and encodes the
properties with its generic field-table code; on the ingress's hot path that was a quarter of
publishing. The method frame is the same for every message to one routing key (cached), and the
properties the ingress sets (short strings, a delivery mode, a timestamp, a table of string
headers) encode directly. Anything else falls back to pika. tests/ingress/test_frames.py checks
the bytes against pika's own marshalling.
"""
from __future__ import annotations

import struct
from functools import lru_cache

from pika import frame, spec

FRAME_END = b"\xce"
_H, _I, _Q = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_BASIC_CLASS = 60
# property flag bits of basic (AMQP 0-9-1), in encoding order
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE = 1 << 15, 1 << 13, 1 << 12
_CORRELATION_ID, _REPLY_TO, _EXPIRATION, _MESSAGE_ID, _TIMESTAMP, _TYPE = (
    1 << 10, 1 << 9, 1 << 8, 1 << 7, 1 << 6, 1 << 5)


@lru_cache(maxsize=1024)
def method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    return frame.Method(channel, spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                    mandatory=True)).marshal()


def publish(channel: int, exchange: str, routing_key: str, body: bytes, properties: spec.BasicProperties,
            body_max: int) -> bytes:
    """All frames of one message; bodies split every `body_max` bytes (frame_max less 8)."""
    parts = [method_frame(channel, exchange, routing_key), header_frame(channel, len(body), properties)]
    for start in range(0, len(body), body_max):
        chunk = body[start:start + body_max]
        parts.append(struct.pack(">BHI", spec.FRAME_BODY, channel, len(chunk)) + chunk + FRAME_END)
    return b"".join(parts)


def header_frame(channel: int, body_size: int, properties: spec.BasicProperties) -> bytes:
    encoded = _encode_properties(properties)
    if encoded is None:
        return frame.Header(channel, body_size, properties).marshal()
    payload = struct.pack(">HHQ", _BASIC_CLASS, 0, body_size) + encoded
    return struct.pack(">BHI", spec.FRAME_HEADER, channel, len(payload)) + payload + FRAME_END


class _NotCovered(Exception):
    """A property the fast path does not encode: pika does it."""


def _encode_properties(p: spec.BasicProperties) -> bytes | None:
    """The property list pika would write, or None when it holds a field this does not cover."""
    if (p.content_encoding is not None or p.priority is not None or p.user_id is not None
            or p.app_id is not None or p.cluster_id is not None):
        return None
    flags, out = 0, []
    try:
        if p.content_type is not None:
            flags |= _CONTENT_TYPE
            out.append(_short(p.content_type))
        if p.headers is not None:
            flags |= _HEADERS
            out.append(_string_table(p.headers))
        if p.delivery_mode is not None:
            flags |= _DELIVERY_MODE
            out.append(bytes((p.delivery_mode,)))
        if p.correlation_id is not None:
            flags |= _CORRELATION_ID
            out.append(_short(p.correlation_id))
        if p.reply_to is not None:
            flags |= _REPLY_TO
            out.append(_short(p.reply_to))
        if p.expiration is not None:
            flags |= _EXPIRATION
            out.append(_short(p.expiration))
        if p.message_id is not None:
            flags |= _MESSAGE_ID
            out.append(_short(p.message_id))
        if p.timestamp is not None:
            flags |= _TIMESTAMP
            out.append(_Q.pack(p.timestamp))
        if p.type is not None:
            flags |= _TYPE
            out.append(_short(p.type))
    except (_NotCovered, AttributeError, TypeError, ValueError, struct.error):  # pika's turn
        return None
    return _H.pack(flags) + b"".join(out)


def _short(value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 255:
        raise _NotCovered
    return bytes((len(data),)) + data


def _string_table(headers: dict) -> bytes:
    """A field table whose values are all strings ('S', long string)."""
    out = []
    for key, value in headers.items():
        if type(value) is not str:
            raise _NotCovered
        data = value.encode("utf-8")
        out.append(_short(key) + b"S" + _I.pack(len(data)) + data)
    table = b"".join(out)
    return _I.pack(len(table)) + table
