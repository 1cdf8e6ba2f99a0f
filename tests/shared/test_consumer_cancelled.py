"""A consumer the broker cancels (basic.cancel) consumes again, on a queue it declares anew.

In a cluster, `W.queries` (a classic, non-durable queue) lives on one node and is deleted when
that node goes down; a worker replica connected through another node only receives basic.cancel.
It used to sit there, its channel open (so /readyz said ready), consuming nothing, until
restarted. Deleting the queue on the one broker here sends the same basic.cancel.
"""
from __future__ import annotations

import pika

from tests.support.db import query
from tests.support.events import SEED_DATA, event
from tests.support.bus import publish_body
from tests.support.processes import answering_queries
from tests.support.rabbit import Rabbit, wait_for


def consumers(url: str, queue: str) -> int:
    """The queue's consumer count; 0 while it does not exist."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()


def test_a_deleted_queue_is_declared_again_and_consumed(start_worker, settings_db, vhost):
    worker = start_worker("settings", SETTINGS_DATABASE_URL=settings_db)
    wait_for(lambda: answering_queries(worker) and consumers(vhost, "settings") == 1, timeout=30,
             message="worker consuming both queues")
    client = Rabbit(vhost)
    try:
        client.channel.queue_delete("settings.queries")
        wait_for(lambda: consumers(vhost, "settings.queries") == 1, timeout=20,
                 message=f"settings.queries declared and consumed again: {worker.text()[-1500:]}")
        client.channel.queue_delete("settings")
        wait_for(lambda: consumers(vhost, "settings") == 1, timeout=20,
                 message=f"settings declared and consumed again: {worker.text()[-1500:]}")
        body = publish_body(client, event(data=SEED_DATA))
        wait_for(lambda: query(settings_db, "SELECT count(*) FROM user_settings WHERE user_id = %s",
                               (body["user_id"],))[0][0] == 1, message="event applied after the redeclare")
    finally:
        client.close()
    assert worker.alive()
    assert any(line.get("msg") == "query consumer reconnecting" and "cancelled" in line.get("error", "")
               for line in worker.logs())
