"""Connecting to RabbitMQ and the AMQP properties every event carries (DESIGN §2)."""
from __future__ import annotations

import time

import pika

from shared.envelope import Envelope

PERSISTENT = 2
CONTENT_TYPE = "application/json"


def parameters(url: str, heartbeat_s: int = 30, blocked_timeout_s: float = 10.0,
               client_name: str = "spotter") -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat_s
    params.blocked_connection_timeout = blocked_timeout_s
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": client_name}
    return params


def connect(url: str, **kwargs) -> pika.BlockingConnection:
    return pika.BlockingConnection(parameters(url, **kwargs))


def event_properties(event: Envelope, headers: dict | None = None,
                     persistent: bool = True) -> pika.BasicProperties:
    """message_id, type, content type, persistence, timestamp, and envelope headers.

    The ingress encodes the same properties itself (shared/frames.py event_properties).
    """
    return pika.BasicProperties(
        message_id=event.id,
        type=event.event_type,
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT if persistent else 1,
        timestamp=int(time.time()),
        headers={"schema_version": event.schema_version,
                 "source_service": event.source_service, **(headers or {})},
    )


# Errors after which a connection is gone and must be reopened.
CONNECTION_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionClosed,
                     pika.exceptions.ChannelClosed, pika.exceptions.ChannelWrongStateError,
                     pika.exceptions.StreamLostError, ConnectionError, OSError)
