"""A three-node RabbitMQ cluster on this machine (tests/chaos/cluster.py), nodes killed mid-stream.

The dm worker and the ingress get every node in a comma-separated RABBITMQ_URL. While events
stream in (straight to the exchange with publisher confirms, and through the ingress), we kill -9
the node the worker is connected to, then the leader of its quorum queue, then the ingress's
node. Every confirmed event has exactly one effect in the database, an unconfirmed one at most
one; the worker and the ingress carry on through a live node; a client of the ingress sees 202,
or a 503 during the seconds of failover that a retry turns into 202.
"""
from __future__ import annotations

import threading
import time
import uuid

import pika
import pytest

from shared import broker
from shared.envelope import new_event
from tests.chaos.cluster import RabbitCluster
from tests.support.db import query
from tests.support.events import event as frontend_event
from tests.support.ingress_server import Ingress
from tests.support.net import free_port
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import wait_for

QUORUM_QUEUES = ("dm", "dm.dead", "dm.retry.1s", "dm.retry.2s", "settings", "notify")


@pytest.fixture(scope="module")
def cluster():
    with RabbitCluster(3) as started:
        print(f"cluster of 3 started in {started.start_seconds} s")
        yield started


@pytest.fixture(scope="module")
def cluster_env(cluster):
    env = {"RABBITMQ_URL": cluster.url, "RABBITMQ_MANAGEMENT_URL": cluster.management_urls,
           "RETRY_DELAYS_S": "1,2"}
    run_cli("topology", env=env)
    return env


def test_topology_puts_a_replica_of_every_quorum_queue_on_every_node(cluster, cluster_env):
    # RabbitMQ 3.10: without x-quorum-initial-group-size a quorum queue gets up to
    # quorum_cluster_size (3) members, from every node of the cluster, running or not
    for name in QUORUM_QUEUES:
        assert cluster.members(name) == [0, 1, 2], name
    assert 0 <= cluster.leader("dm") < 3


class Publisher:
    """Publishes dm events with confirms, one at a time, reconnecting to any node it can."""

    def __init__(self, urls: str):
        self.urls = urls
        self.confirmed: set[str] = set()    # message_ids the broker confirmed
        self.unconfirmed: set[str] = set()  # sent when the connection went: zero or one effect
        self.refused: set[str] = set()
        self._channel = None

    def send(self, event) -> None:
        message_id = event.data["message_id"]
        try:
            channel = self._open()
            channel.basic_publish("app.events", event.event_type, event.to_json(), broker.event_properties(event),
                                  mandatory=True)
            self.confirmed.add(message_id)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
            self.refused.add(message_id)
        except broker.CONNECTION_ERRORS:
            self.unconfirmed.add(message_id)
            self._channel = None

    def _open(self):
        if self._channel is None or not self._channel.is_open:
            deadline = time.monotonic() + 30
            while True:
                try:
                    self._channel = broker.connect(self.urls, client_name="test-publisher").channel()
                    break
                except broker.CONNECTION_ERRORS:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            self._channel.confirm_delivery()
        return self._channel


class Poster:
    """Posts dm events to the ingress; on a 503 retries the same event until 202 (at most 20 s)."""

    def __init__(self, ingress: Ingress):
        self.ingress = ingress
        self.accepted: set[str] = set()
        self.statuses: list[int] = []
        self.failed: list[tuple[str, int, object]] = []
        self.longest_retry_s = 0.0

    def send(self, event: dict) -> None:
        message_id, first = event["data"]["message_id"], time.monotonic()
        while True:
            try:
                status, _, answer = self.ingress.post(event)
            except OSError as exc:  # the ingress itself must not go away
                status, answer = -1, repr(exc)
            self.statuses.append(status)
            if status == 202:
                self.accepted.add(message_id)
                self.longest_retry_s = max(self.longest_retry_s, time.monotonic() - first)
                return
            if status != 503 or time.monotonic() - first > 20:
                self.failed.append((message_id, status, answer))
                return
            time.sleep(0.2)


def _node_of(cluster: RabbitCluster, proc, msg: str) -> tuple[int, int]:
    """(index of the node named in the process's latest `msg` log line, how many such lines)."""
    lines = [line for line in proc.logs() if line.get("msg") == msg and line.get("node")]
    if not lines:
        return -1, 0
    port = int(lines[-1]["node"].rsplit(":", 1)[1])
    return port - cluster.first_port, len(lines)


def _message(user: str, conversation: str):
    return new_event("dm.message.sent", user, {"conversation_id": conversation, "message_id": str(uuid.uuid4()),
                                               "body": "set 3 of 5"}, "test")


def test_nodes_killed_mid_stream_lose_nothing_and_apply_nothing_twice(cluster, cluster_env, make_database,
                                                                    base_env, jwt_secret):
    db = make_database("dm")
    env = {**base_env, **cluster_env, "DM_DATABASE_URL": db}
    worker = workers_cli("run", "dm", env=env)
    ingress_port = free_port()
    ingress_proc = workers_cli("serve", env={**env, "PORT": str(ingress_port), "WEB_CONCURRENCY": "1"})
    ingress = Ingress(ingress_proc, ingress_port, jwt_secret)
    try:
        wait_for(lambda: _node_of(cluster, worker, "consuming")[1], timeout=60, message="worker consuming")
        wait_for(lambda: _node_of(cluster, ingress_proc, "broker connected")[1], timeout=60, message="ingress connected")

        # two conversations: one fed straight to the exchange, one through the ingress
        alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
        direct, posted = str(uuid.uuid4()), str(uuid.uuid4())
        publisher, poster = Publisher(cluster.url), Poster(ingress)
        for conversation in (direct, posted):
            publisher._open().basic_publish("app.events", "dm.conversation.started", *_started(alice, bob, conversation))
        wait_for(lambda: query(db, "SELECT count(*) FROM conversations")[0][0] == 2, message="conversations")

        stop = threading.Event()

        def stream_direct():
            while not stop.is_set():
                publisher.send(_message(alice, direct))
                time.sleep(0.02)

        def stream_posted():
            while not stop.is_set():
                poster.send(frontend_event("dm.message.sent", user_id=bob, data={
                    "conversation_id": posted, "message_id": str(uuid.uuid4()), "body": "set 4 of 5"}))
                time.sleep(0.02)

        threads = [threading.Thread(target=stream_direct, daemon=True),
                   threading.Thread(target=stream_posted, daemon=True)]
        for t in threads:
            t.start()
        applied = lambda: query(db, "SELECT count(*) FROM messages")[0][0]  # noqa: E731
        time.sleep(2)

        # 1. the node the worker consumes through
        node, lines = _node_of(cluster, worker, "consuming")
        cluster.kill(node)
        wait_for(lambda: _node_of(cluster, worker, "consuming")[1] > lines, timeout=30, message="worker reconnected")
        moved_to = _node_of(cluster, worker, "consuming")[0]
        assert moved_to != node and cluster.is_running(moved_to)
        before = applied()
        wait_for(lambda: applied() > before + 20, timeout=20, message="messages applied with a node down")
        cluster.restart(node)

        # 2. the leader of the worker's quorum queue (it may be the worker's node again)
        leader = cluster.leader("dm")
        cluster.kill(leader)
        before = applied()
        wait_for(lambda: applied() > before + 20, timeout=30, message="messages applied after the leader died")
        assert cluster.leader("dm") != leader
        cluster.restart(leader)

        # 3. the ingress's node, left down: the rest runs on two of three
        ingress_node, lines = _node_of(cluster, ingress_proc, "broker connected")
        cluster.kill(ingress_node)
        wait_for(lambda: _node_of(cluster, ingress_proc, "broker connected")[1] > lines, timeout=30,
                 message="ingress reconnected")
        accepted = len(poster.accepted)
        wait_for(lambda: len(poster.accepted) > accepted + 20, timeout=20, message="202s with the ingress's node down")
        stop.set()
        for t in threads:
            t.join(30)

        everything = publisher.confirmed | poster.accepted
        wait_for(lambda: everything <= {r[0] for r in query(db, "SELECT message_id::text FROM messages")},
                 timeout=60, message="every confirmed event applied")
        rows = dict(query(db, "SELECT message_id::text, count(*) FROM messages GROUP BY 1"))
        sent = everything | publisher.unconfirmed
        assert not poster.failed, poster.failed[:5]
        assert not publisher.refused
        assert all(rows.get(m) == 1 for m in everything), "a confirmed event applied twice or not at all"
        assert set(rows) <= sent and all(n == 1 for n in rows.values())
        # the conversation's sequence is dense: no message applied twice under another seq
        seqs = [r[0] for r in query(db, "SELECT seq FROM messages WHERE conversation_id = %s ORDER BY seq", (direct,))]
        assert seqs == list(range(1, len(seqs) + 1))
        assert worker.alive() and ingress_proc.alive()
        assert cluster.is_running(_node_of(cluster, worker, "consuming")[0])
        dead = broker.connect(cluster.url).channel().queue_declare("dm.dead", passive=True).method.message_count
        assert dead == 0
        print(f"confirmed direct={len(publisher.confirmed)} unconfirmed={len(publisher.unconfirmed)} "
              f"ingress 202={len(poster.accepted)} 503s={poster.statuses.count(503)} "
              f"longest retry={poster.longest_retry_s:.1f}s")
    finally:
        worker.terminate()
        ingress_proc.terminate()


def _started(starter: str, other: str, conversation: str):
    event = new_event("dm.conversation.started", starter, {"conversation_id": conversation,
                                                           "participant_ids": [other]}, "test")
    return event.to_json(), broker.event_properties(event)
