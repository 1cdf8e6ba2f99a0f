"""The two ways events reach the broker, as a real client uses them: POST to the ingress (a 202
means the broker confirmed), or straight to the exchange with publisher confirms (pika's
BlockingConnection: an ack, a nack, or a mandatory message returned unroutable).

Events go out paced over the run's seconds, a few senders per path at once; an unconfirmed send
is re-sent with backoff (the same event: the worker's idempotency key absorbs a copy that did
arrive) until it is confirmed or refused, or sends run out."""
from __future__ import annotations

import http.client
import threading
import time

import orjson
import pika
import pika.exceptions

from tests.chaos.ledger import CONFIRMED, REFUSED_SEND, UNCONFIRMED, UNSENT, Ledger
from tests.chaos.workload import INGRESS, REFUSED, Planned
from tests.support import auth

EVENTS = "/api/v1/notify/events"
MAX_SENDS = 12           # with the backoff below: about 40 s of outage before an event is given up on
WRONG_KEY = "chaos-wrong-signing-key-0123456789abcdef0123"  # not the ingress's: its tokens are refused


def backoff(send: int) -> float:
    return min(0.25 * 2 ** send, 4.0)


class IngressSender:
    """One keep-alive HTTP connection to the ingress; a token per user."""

    def __init__(self, port: int, secret: str):
        self.port, self.secret = port, secret
        self.conn: http.client.HTTPConnection | None = None
        self.tokens: dict[str, str] = {}

    def send(self, p: Planned) -> str:
        user = p.event["user_id"]
        if p.expect == REFUSED:
            token = auth.encode(WRONG_KEY, user, ttl_s=3600)
        else:
            token = self.tokens.get(user) or self.tokens.setdefault(user, auth.encode(self.secret, user, ttl_s=3600))
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                self.conn.connect()
        except OSError:
            self.close()
            return UNSENT
        try:
            self.conn.request("POST", EVENTS, body=orjson.dumps(p.event),
                              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return UNCONFIRMED  # the request may have been published before the answer was lost
        if response.status == 202:
            return CONFIRMED
        if 400 <= response.status < 500:
            return REFUSED_SEND  # refused before publishing: auth, schema, rate limit, no consumer
        return UNCONFIRMED       # 503 (broker unavailable, or no confirm in time), 500

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class DirectSender:
    """A confirming channel straight to app.events, as the ingress publishes (mandatory, persistent)."""

    def __init__(self, urls: list[str], first: int = 0):
        self.urls, self.next = urls, first
        self.conn: pika.BlockingConnection | None = None
        self.channel = None

    def _connect(self) -> None:
        # a cluster: start at another node each time, so a dead one is skipped
        ordered = self.urls[self.next % len(self.urls):] + self.urls[:self.next % len(self.urls)]
        self.next += 1
        params = []
        for url in ordered:
            p = pika.URLParameters(url)
            p.heartbeat, p.blocked_connection_timeout, p.socket_timeout = 10, 30, 5
            p.connection_attempts = 1
            params.append(p)
        self.conn = pika.BlockingConnection(params)
        self.channel = self.conn.channel()
        self.channel.confirm_delivery()

    def send(self, p: Planned) -> str:
        e = p.event
        props = pika.BasicProperties(message_id=e["client_generated_id"], type=e["event_type"],
                                     content_type="application/json", delivery_mode=2, timestamp=int(time.time()),
                                     headers={"schema_version": e["schema_version"],
                                              "source_service": e["source_service"]})
        try:
            if self.conn is None or not self.conn.is_open:
                self._connect()
        except (pika.exceptions.AMQPError, OSError):
            self.close()
            return UNSENT  # no connection: nothing was published
        try:
            self.channel.basic_publish("app.events", e["event_type"], orjson.dumps(e), props, mandatory=True)
            return CONFIRMED
        except pika.exceptions.UnroutableError:
            return REFUSED_SEND   # returned: no queue took it
        except pika.exceptions.NackError:
            return UNCONFIRMED    # the broker refused responsibility; it may still be in a queue
        except (pika.exceptions.AMQPError, OSError):
            self.close()
            return UNCONFIRMED

    def close(self) -> None:
        try:
            if self.conn is not None and self.conn.is_open:
                self.conn.close()
        except Exception:
            pass
        self.conn = self.channel = None


def publish(plans: list[Planned], ledger: Ledger, sender_for, seconds: float, t0: float,
            stopping: threading.Event, senders: dict[str, int]) -> None:
    """Send every planned event from `senders[path]` threads per path, event i due at
    t0 + i × seconds / len(plans); returns once each is confirmed, refused or out of sends."""
    spacing = seconds / max(1, len(plans))
    threads = []
    for path, count in senders.items():
        mine = [p for p in plans if p.path == path]
        for n in range(count):
            share = mine[n::count]
            threads.append(threading.Thread(target=_send_all, name=f"{path}-{n}", daemon=True,
                                            args=(share, ledger, sender_for(path, n), spacing, t0, stopping)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _send_all(share: list[Planned], ledger: Ledger, sender, spacing: float, t0: float,
              stopping: threading.Event) -> None:
    try:
        for p in share:
            if stopping.wait(max(0.0, t0 + p.index * spacing - time.monotonic())):
                return
            for n in range(MAX_SENDS):
                result = sender.send(p)
                ledger.record(p.id, result)
                if result not in (UNCONFIRMED, UNSENT) or stopping.wait(backoff(n)):
                    break
    finally:
        sender.close()


def sender_factory(ingress_port: int, secret: str, direct_urls: list[str]):
    return lambda path, n: IngressSender(ingress_port, secret) if path == INGRESS else DirectSender(direct_urls, n)
