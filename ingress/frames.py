"""The bytes of one basic.publish (mandatory): method, header and body frames, as pika sends them.

pika's Channel.basic_publish builds a Basic.Publish object and three frame objects per message
and queues each frame on its own. The method frame is the same for every message to one
routing key, so it is marshalled once (cached); the header frame is pika's own marshalling; the
body frames are packed directly; all three leave as one buffer. tests/ingress/test_frames.py
checks the bytes against pika's.
"""
from __future__ import annotations

import struct
from functools import lru_cache

from pika import frame, spec

_FRAME_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_FRAME_END = bytes((spec.FRAME_END,))


@lru_cache(maxsize=1024)
def method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    return frame.Method(channel, spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                    mandatory=True)).marshal()


def publish(channel: int, exchange: str, routing_key: str, body: bytes, properties: spec.BasicProperties,
            body_max: int) -> bytes:
    """All frames of one message; bodies split every `body_max` bytes (frame_max less 8)."""
    parts = [method_frame(channel, exchange, routing_key), frame.Header(channel, len(body), properties).marshal()]
    for start in range(0, len(body), body_max):
        chunk = body[start:start + body_max]
        parts.append(_FRAME_HEAD.pack(spec.FRAME_BODY, channel, len(chunk)) + chunk + _FRAME_END)
    return b"".join(parts)
