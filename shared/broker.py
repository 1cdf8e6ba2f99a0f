"""Connecting to RabbitMQ and the AMQP properties every event carries (DESIGN §2).

RABBITMQ_URL holds one AMQP URL or several, comma-separated: the nodes of one cluster. Every
process connects through here (`connect`, or `Failover` on the ingress's event loop), trying
the nodes in turn from a random one, so a dead node costs one refused connect, not an outage.
"""
from __future__ import annotations

import random
import time
from urllib.parse import urlsplit

import pika

from shared.backoff import Backoff
from shared.envelope import Envelope

PERSISTENT = 2
CONTENT_TYPE = "application/json"
SCHEMES = ("amqp", "amqps")


class BrokerUrlError(ValueError):
    """RABBITMQ_URL cannot be used; the message names the entry (credentials redacted)."""


def redact(url: str) -> str:
    """The URL with its password replaced by ***: safe for a log line or an error message.

    By text, not by urlsplit: a malformed entry (no "//", a '#' or '@' in the password) is the
    one that ends up in an error message, and must not leak either. Everything between the
    user's ':' and the last '@' goes."""
    url = url.strip()
    at = url.rfind("@")
    if at < 0:
        return url
    slashes = url.find("//", 0, at)
    start = slashes + 2 if slashes >= 0 else 0
    user, colon, _password = url[start:at].partition(":")
    return f"{url[:start]}{user}:***{url[at:]}" if colon else url


def redact_all(urls: str) -> str:
    return ",".join(redact(u) for u in urls.split(","))


def split_urls(urls: str) -> list[str]:
    """The AMQP URLs of a RABBITMQ_URL, checked; BrokerUrlError names the first bad entry.

    Refused at start rather than at the first reconnect: a typo in the third node's URL would
    otherwise surface only when the first two are down."""
    entries = [u.strip() for u in (urls or "").split(",")]
    if entries == [""]:
        raise BrokerUrlError("RABBITMQ_URL is empty: set it to amqp://user:password@host:5672/%2F "
                             "(several nodes: comma-separated)")
    for number, entry in enumerate(entries, 1):
        where = f"RABBITMQ_URL entry {number} of {len(entries)}"
        if not entry:
            raise BrokerUrlError(f"{where} is empty (a stray comma?)")
        try:
            parts = urlsplit(entry)
            parts.port  # raises on a port that is not a number
        except ValueError as exc:
            raise BrokerUrlError(f"{where} ({redact(entry)}) is not a URL: {exc}") from None
        if parts.scheme not in SCHEMES:
            raise BrokerUrlError(f"{where} ({redact(entry)}) must start with amqp:// or amqps://")
        if not parts.hostname:
            raise BrokerUrlError(f"{where} ({redact(entry)}) names no host")
        try:
            pika.URLParameters(entry)
        except Exception as exc:  # pika's own checks (query options, vhost)
            raise BrokerUrlError(f"{where} ({redact(entry)}) is refused by pika: {exc}") from None
    return entries


def rotated(items: list, start: int | None = None) -> list:
    """`items` from a random position on (wrapping around).

    Every process starting at the first node would pile all connections, and so every consumer
    and every publisher's work, on one node, and move them all to the second when it dies. From
    a random start they spread over the nodes, and the survivors share a dead node's clients."""
    if not items:
        return []
    start = random.randrange(len(items)) if start is None else start % len(items)
    return items[start:] + items[:start]


def parameters(url: str, heartbeat_s: int = 30, blocked_timeout_s: float = 10.0,
               client_name: str = "spotter") -> pika.URLParameters:
    """Connection parameters of one AMQP URL (a single node)."""
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat_s
    params.blocked_connection_timeout = blocked_timeout_s
    params.connection_attempts = 1  # our own loops retry, with backoff (shared/backoff.py)
    params.socket_timeout = 5
    params.client_properties = {"connection_name": client_name}
    return params


def parameters_list(urls: str, heartbeat_s: int = 30, blocked_timeout_s: float = 10.0,
                    client_name: str = "spotter", start: int | None = None) -> list[pika.URLParameters]:
    """One Parameters per node of RABBITMQ_URL, from a random node on (`rotated`)."""
    return rotated([parameters(u, heartbeat_s, blocked_timeout_s, client_name) for u in split_urls(urls)], start)


def address(params: pika.connection.Parameters) -> str:
    """host:port of a node, for log lines (never credentials)."""
    return f"{params.host}:{params.port}"


def open_connection(urls: str, **kwargs) -> tuple[pika.BlockingConnection, pika.URLParameters]:
    """A BlockingConnection to the first node that answers, and that node's parameters.

    Each node once, from a random one; the last error when none answers (callers back off
    before calling again). Not BlockingConnection(list): pika's workflow gives up on the rest of
    the list when one host name does not resolve (a deleted pod's DNS name), which is exactly
    when the others are needed."""
    error: BaseException | None = None
    for params in parameters_list(urls, **kwargs):
        try:
            return pika.BlockingConnection(params), params
        except CONNECTION_ERRORS as exc:
            error = exc
    raise error


def connect(urls: str, **kwargs) -> pika.BlockingConnection:
    return open_connection(urls, **kwargs)[0]


class Failover:
    """Which node to connect to next, and how long to wait first: for event-loop clients (the
    ingress's GeventConnection) that make one attempt per callback.

    After a failure the next node is tried at once; only after every node failed in a row does
    the backoff wait (growing, jittered): a dead node is never retried in a hot loop, and a
    live one is reached within one round."""

    def __init__(self, urls: str, backoff: Backoff, start: int | None = None, **kwargs):
        self.nodes = parameters_list(urls, start=start, **kwargs)
        self.backoff = backoff
        self._index = 0
        self._failures = 0  # in a row, since the last connection that opened

    @property
    def current(self) -> pika.URLParameters:
        return self.nodes[self._index]

    def failed(self) -> float:
        """The connection to `current` failed or was lost: move on; the delay before the next try."""
        self._index = (self._index + 1) % len(self.nodes)
        self._failures += 1
        return self.backoff.next() if self._failures % len(self.nodes) == 0 else 0.0

    def connected(self) -> None:
        self._failures = 0
        self.backoff.reset()


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


class ConsumerCancelled(pika.exceptions.AMQPError):
    """The broker cancelled our consumer (basic.cancel): its queue was deleted, or, in a cluster,
    a classic queue went down with its node. Consuming again needs the queue declared again, so
    the consumer treats it as a lost connection and reconnects."""


# Errors after which a connection is gone and must be reopened (open_connection uses it).
CONNECTION_ERRORS = (ConsumerCancelled, pika.exceptions.AMQPConnectionError, pika.exceptions.ConnectionClosed,
                     pika.exceptions.ChannelClosed, pika.exceptions.ChannelWrongStateError,
                     pika.exceptions.StreamLostError, ConnectionError, OSError)
