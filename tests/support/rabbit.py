"""Throwaway RabbitMQ vhosts, and reading queues the way a person would check them."""
from __future__ import annotations

import subprocess
import time
import uuid

import pika

BASE = "amqp://guest:guest@127.0.0.1:5672/"


def create_vhost() -> tuple[str, str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    return name, f"{BASE}{name}"


def delete_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)


def url_via(url: str, port: int) -> str:
    """The same vhost, reached through a proxy listening on `port`."""
    return url.replace("127.0.0.1:5672", f"127.0.0.1:{port}")


class Rabbit:
    """A blocking connection to one vhost, for arranging and asserting in tests."""

    def __init__(self, url: str):
        self.url = url
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def drain(self, queue: str, limit: int = 10_000) -> list[tuple[pika.BasicProperties, bytes]]:
        """Take every message currently in `queue` (acked)."""
        out = []
        while len(out) < limit:
            method, props, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            out.append((props, body))
        return out

    def tap(self, exchange: str, routing_key: str) -> str:
        """A fresh queue bound to `routing_key`, to watch what gets published."""
        q = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(q, exchange, routing_key=routing_key)
        return q

    def publish(self, exchange: str, routing_key: str, body: bytes, **props) -> None:
        self.channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(
            content_type="application/json", delivery_mode=2, **props))


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
