"""dm worker on the real broker, database and ingress: conversations, messages stored and announced
once, participants only, read markers that never move back, stable pages, no body in a log.

One worker, ingress, vhost and database serve the whole module (starting them per test would
cost more than the tests); each test works in conversations and with users of its own."""
from __future__ import annotations

import uuid

import pytest

from workers.ops import migrate
from shared.tokens import mint
from tests.support.db import PG, drop_database, query
from tests.support import rabbit
from tests.support.auth import ingress_env, jwt_config
from tests.support.events import dumps, event
from tests.support.http import call
from tests.support.processes import workers_cli
from tests.support.rabbit import wait_for
from tests.support.http import ready
from tests.support.net import free_port
from tests.support.bus import outcomes, publish
from tests.support.processes import answering_queries

EVENTS = "/api/v1/notify/events"


# ---- the stack and helpers ------------------------------------------------------------------------

class Stack:
    """The dm worker and the ingress on one vhost, with the worker's database."""

    def __init__(self, env: dict, jwt_secret: str):
        self.env, self.jwt_secret = env, jwt_secret
        self.db, self.port = env["DM_DATABASE_URL"], int(env["PORT"])
        self.workers: list = []
        self.dead: dict[str, dict] = {}   # message_id → headers of everything dead-lettered so far
        self.bodies: list[str] = []       # every message body the module sent

    def start_worker(self, **env):
        proc = workers_cli("run", "dm", env={**self.env, **{k: str(v) for k, v in env.items()}})
        self.workers.append(proc)
        wait_for(lambda: any(l.get("msg") == "consuming" for l in proc.logs()), message="dm worker consuming")
        wait_for(lambda: answering_queries(proc), message="dm worker answering queries")
        return proc

    def token(self, user_id: str) -> str:
        return mint(user_id, jwt_config(self.jwt_secret))

    def post(self, user_id: str, body: dict):
        return call(self.port, "POST", EVENTS, self.token(user_id), body)

    def page(self, user_id: str, conversation_id: str, **params):
        query_string = "&".join(f"{k}={v}" for k, v in params.items())
        return call(self.port, "GET", f"/api/v1/conversations/{conversation_id}/messages?{query_string}",
                    self.token(user_id))


@pytest.fixture(scope="module")
def stack(jwt_secret, feed_keys):
    vhost, url = rabbit.create_vhost()
    db_name = f"dm_test_{uuid.uuid4().hex[:10]}"
    env = {"RABBITMQ_URL": url, **ingress_env(jwt_secret),
           "FEED_TOKEN_PRIVATE_KEY": feed_keys[0], "FEED_TOKEN_PUBLIC_KEY": feed_keys[1],
           "DM_DATABASE_URL": PG + db_name, "PORT": str(free_port()), "LOG_LEVEL": "INFO",
           "RETRY_DELAYS_S": "1,2", "MAX_ATTEMPTS": "3", "OUTBOX_RELAY_INTERVAL_S": "1", "PREFETCH": "10",
           "PYTHONUNBUFFERED": "1"}
    migrate.ensure_database(env["DM_DATABASE_URL"])
    migrate.apply("dm", env["DM_DATABASE_URL"])
    stack = Stack(env, jwt_secret)
    ingress = workers_cli("serve", env=env)
    try:
        stack.worker = stack.start_worker()
        wait_for(lambda: ready(stack.port), message="ingress ready")
        yield stack
    finally:
        for proc in [ingress, *stack.workers]:
            proc.terminate()
        rabbit.delete_vhost(vhost)
        drop_database(db_name)


@pytest.fixture
def bus(stack):
    """A broker connection for one test: its taps go away with it."""
    client = rabbit.Rabbit(stack.env["RABBITMQ_URL"])
    yield client
    client.close()


def user() -> str:
    return str(uuid.uuid4())


def start(bus, starter: str, others: list[str], conversation_id: str | None = None, **extra) -> dict:
    data = {"conversation_id": conversation_id or str(uuid.uuid4()), "participant_ids": others, **extra}
    return publish(bus, "dm.conversation.started", data, starter)


def send(bus, sender: str, conversation_id: str, body: str = "See you at the rack at 6?",
         message_id: str | None = None) -> dict:
    data = {"conversation_id": conversation_id, "message_id": message_id or str(uuid.uuid4()), "body": body}
    return publish(bus, "dm.message.sent", data, sender)


def read(bus, reader: str, conversation_id: str, message_id: str) -> dict:
    return publish(bus, "dm.message.read", {"conversation_id": conversation_id, "message_id": message_id}, reader)


def settled(stack, *events: dict) -> None:
    """Wait until the worker committed these events and published what they emitted."""
    ids = [e["client_generated_id"] for e in events]
    wait_for(lambda: query(stack.db, "SELECT count(*) FROM idempotency_keys "
                                     "WHERE client_generated_id = ANY(%s::uuid[])", (ids,))[0][0] == len(ids),
             message=f"{len(ids)} event(s) processed")
    wait_for(lambda: query(stack.db, "SELECT count(*) FROM outbox")[0][0] == 0, message="outbox published")


def dead_letters(stack, bus, *events: dict, timeout: float = 20) -> dict[str, dict]:
    """client_generated_id → dead-letter headers of these events, once all of them are dead."""
    wanted = {e["client_generated_id"] for e in events}

    def arrived():
        stack.dead.update({p.message_id: p.headers for p, _ in bus.drain("dm.dead")})
        return wanted <= stack.dead.keys()
    wait_for(arrived, timeout=timeout, message=f"{len(wanted)} dead letter(s)")
    return {i: stack.dead[i] for i in wanted}


def none_dead(stack, bus, *events: dict) -> bool:
    stack.dead.update({p.message_id: p.headers for p, _ in bus.drain("dm.dead")})
    return not {e["client_generated_id"] for e in events} & stack.dead.keys()


def messages(stack, conversation_id: str) -> list[tuple]:
    return query(stack.db, "SELECT message_id::text, sender_id::text, seq FROM messages "
                           "WHERE conversation_id = %s ORDER BY seq", (conversation_id,))


# ---- the happy path, through the ingress --------------------------------------------------------

def test_a_conversation_and_its_message_land_with_their_outcome_events(stack, bus):
    started = bus.tap("app.events", "dm.conversation.persisted")
    persisted = bus.tap("app.events", "dm.message.persisted")
    alice, bob, carol = user(), user(), user()
    conversation_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    # When Alice starts a group with Bob and Carol, and Bob writes in it, through the app's API
    opened = event("dm.conversation.started", user_id=alice, data={
        "conversation_id": conversation_id.upper(), "participant_ids": [bob, carol], "title": "Leg day crew"})
    assert stack.post(alice, opened)[0] == 202
    (conversation,) = outcomes(bus, started)
    sent = event("dm.message.sent", user_id=bob, data={
        "conversation_id": conversation_id, "message_id": message_id, "body": "Squats at 6?"})
    assert stack.post(bob, sent)[0] == 202
    (message,) = outcomes(bus, persisted)
    # Then the conversation, its three participants and the message are stored
    assert query(stack.db, "SELECT started_by::text, title, last_seq FROM conversations WHERE conversation_id = %s",
                 (conversation_id,)) == [(alice, "Leg day crew", 1)]
    assert sorted(r[0] for r in query(stack.db, "SELECT user_id::text FROM participants WHERE conversation_id = %s",
                                      (conversation_id,))) == sorted([alice, bob, carol])
    assert messages(stack, conversation_id) == [(message_id, bob, 1)]
    # and both outcome events say what the other participants' apps need
    assert conversation["user_id"] == alice
    assert conversation["data"] == {"conversation_id": conversation_id, "participant_ids": [alice, bob, carol],
                                    "title": "Leg day crew"}
    assert message["user_id"] == bob
    data = message["data"]
    assert {k: v for k, v in data.items() if k not in ("created_at", "recipient_ids")} == {
        "conversation_id": conversation_id, "message_id": message_id, "sender_id": bob, "body": "Squats at 6?"}
    assert sorted(data["recipient_ids"]) == sorted([alice, carol])
    # And Carol reads it back; the sender has read what he wrote
    status, body, _ = stack.page(carol, conversation_id, limit=10)
    assert status == 200, body
    assert body["conversation_id"] == conversation_id and body["title"] == "Leg day crew"
    assert body["messages"] == [{"message_id": message_id, "sender_id": bob, "body": "Squats at 6?",
                                 "created_at": data["created_at"]}]
    assert body["next_cursor"] is None
    assert body["read_up_to"] == {alice: None, bob: message_id, carol: None}
    stack.bodies.append("Squats at 6?")


def test_the_same_events_twice_store_and_announce_once(stack, bus):
    started = bus.tap("app.events", "dm.conversation.persisted")
    persisted = bus.tap("app.events", "dm.message.persisted")
    alice, bob = user(), user()
    # Given a conversation started, then started again by its starter (a retry with a new id)
    opened = start(bus, alice, [bob])
    conversation_id = opened["data"]["conversation_id"]
    again = start(bus, alice, [bob, user()], conversation_id=conversation_id)
    # When the same message event is delivered twice, and the message is re-sent with a new event id
    sent = send(bus, bob, conversation_id)
    bus.publish("app.events", "dm.message.sent", dumps(sent), message_id=sent["client_generated_id"])
    resent = send(bus, bob, conversation_id, body=sent["data"]["body"], message_id=sent["data"]["message_id"])
    settled(stack, opened, again, sent, resent)
    # Then one conversation of two, one message, and one outcome event each
    assert query(stack.db, "SELECT count(*) FROM participants WHERE conversation_id = %s", (conversation_id,)) == [(2,)]
    assert messages(stack, conversation_id) == [(sent["data"]["message_id"], bob, 1)]
    assert [e["data"]["conversation_id"] for e in outcomes(bus, started)] == [conversation_id]
    assert [e["data"]["message_id"] for e in outcomes(bus, persisted)] == [sent["data"]["message_id"]]
    assert none_dead(stack, bus, opened, again, sent, resent)
    stack.bodies.append(sent["data"]["body"])


# ---- someone else's conversation ----------------------------------------------------------------

def test_a_stranger_can_neither_take_over_nor_write_in_nor_mark_a_conversation(stack, bus):
    persisted = bus.tap("app.events", "dm.message.persisted")
    alice, bob, mallory = user(), user(), user()
    opened = start(bus, alice, [bob], title="Spotting")
    conversation_id = opened["data"]["conversation_id"]
    first = send(bus, bob, conversation_id)
    elsewhere = start(bus, bob, [mallory])
    settled(stack, opened, first, elsewhere)
    message_id = first["data"]["message_id"]
    # When a stranger restarts the conversation as his own, writes in it and marks it read,
    # and participants reuse a message_id: Alice in the same conversation, Bob in another one
    attempts = [start(bus, mallory, [alice], conversation_id=conversation_id, title="Mine now"),
                send(bus, mallory, conversation_id, body="let me in"),
                read(bus, mallory, conversation_id, message_id),
                send(bus, alice, conversation_id, body="not your message", message_id=message_id),
                send(bus, bob, elsewhere["data"]["conversation_id"], message_id=message_id)]
    # Then each is dead-lettered as forbidden and nothing changed
    dead = dead_letters(stack, bus, *attempts)
    assert {i: h["x-dead-reason"] for i, h in dead.items()} == {a["client_generated_id"]: "forbidden" for a in attempts}
    assert query(stack.db, "SELECT started_by::text, title FROM conversations WHERE conversation_id = %s",
                 (conversation_id,)) == [(alice, "Spotting")]
    assert query(stack.db, "SELECT user_id::text, read_message_id::text FROM participants "
                           "WHERE conversation_id = %s ORDER BY 1", (conversation_id,)) == sorted(
        [(alice, None), (bob, message_id)])
    assert query(stack.db, "SELECT conversation_id::text, sender_id::text FROM messages WHERE message_id = %s",
                 (message_id,)) == [(conversation_id, bob)]
    assert messages(stack, elsewhere["data"]["conversation_id"]) == []
    assert [e["data"]["message_id"] for e in outcomes(bus, persisted)] == [message_id]


def test_only_participants_read_a_conversation_through_the_ingress(stack, bus):
    alice, bob, mallory = user(), user(), user()
    opened = start(bus, alice, [bob])
    conversation_id = opened["data"]["conversation_id"]
    sent = send(bus, alice, conversation_id, body="Deadlift PR today")
    settled(stack, opened, sent)
    stack.bodies.append("Deadlift PR today")
    # A participant reads the conversation
    status, body, _ = stack.page(bob, conversation_id, limit=5)
    assert status == 200 and [m["body"] for m in body["messages"]] == ["Deadlift PR today"]
    # someone else is refused, and gets no message
    status, body, _ = stack.page(mallory, conversation_id, limit=5)
    assert status == 403 and body["error"] == "forbidden" and "messages" not in body
    # an unknown conversation is not found
    assert stack.page(alice, str(uuid.uuid4()), limit=5)[0] == 404
    # a cursor this API never gave out is a bad request
    status, body, _ = stack.page(alice, conversation_id, limit=5, cursor="bm90LWEtY3Vyc29y")
    assert status == 400 and body["field"] == "cursor"


# ---- pages and read markers ---------------------------------------------------------------------

def test_pages_neither_repeat_nor_skip_while_new_messages_arrive(stack, bus):
    alice, bob = user(), user()
    opened = start(bus, alice, [bob])
    conversation_id = opened["data"]["conversation_id"]
    first_seven = [send(bus, [alice, bob][i % 2], conversation_id, body=f"message {i}") for i in range(7)]
    settled(stack, opened, *first_seven)
    # When Bob scrolls back three at a time while new messages keep arriving
    seen, cursor, pages = [], None, 0
    while True:
        status, body, _ = stack.page(bob, conversation_id, limit=3, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        seen += [m["body"] for m in body["messages"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
        settled(stack, *[send(bus, alice, conversation_id, body=f"new {pages}.{i}") for i in range(2)])
    # Then he saw each of the first seven once, newest first, on three pages
    assert seen == [f"message {i}" for i in reversed(range(7))]
    assert pages == 3
    # and the newest page starts with what arrived meanwhile
    status, body, _ = stack.page(bob, conversation_id, limit=4)
    assert [m["body"] for m in body["messages"]] == ["new 2.1", "new 2.0", "new 1.1", "new 1.0"]
    assert [r[2] for r in messages(stack, conversation_id)] == list(range(1, 12))


def test_the_read_marker_only_moves_forward(stack, bus):
    alice, bob = user(), user()
    opened = start(bus, alice, [bob])
    conversation_id = opened["data"]["conversation_id"]
    sent = [send(bus, alice, conversation_id, body=f"set {i}") for i in range(3)]
    settled(stack, opened, *sent)
    m1, m2, m3 = (s["data"]["message_id"] for s in sent)
    marker = lambda: stack.page(bob, conversation_id, limit=1)[1]["read_up_to"]
    assert marker() == {alice: m3, bob: None}
    # When Bob marks the second message read, then the third, then the first (an older screen)
    for message_id, expected in ((m2, m2), (m3, m3), (m1, m3)):
        settled(stack, read(bus, bob, conversation_id, message_id))
        # Then his marker moves to the second, to the third, and stays there
        assert marker() == {alice: m3, bob: expected}
    # And a message of another conversation cannot be his marker here
    other = start(bus, bob, [alice])
    other_message = send(bus, bob, other["data"]["conversation_id"])
    settled(stack, other, other_message)
    wrong = read(bus, bob, conversation_id, other_message["data"]["message_id"])
    headers = dead_letters(stack, bus, wrong)[wrong["client_generated_id"]]
    assert headers["x-dead-reason"] == "invalid" and headers["x-dead-field"] == "data.message_id"
    assert marker() == {alice: m3, bob: m3}


def test_messages_from_two_replicas_are_numbered_without_gaps(stack, bus):
    second = stack.start_worker(PREFETCH=4)
    try:
        alice, bob = user(), user()
        opened = start(bus, alice, [bob])
        conversation_id = opened["data"]["conversation_id"]
        settled(stack, opened)
        # When both write forty messages at once and two replicas share the queue
        sent = [send(bus, [alice, bob][i % 2], conversation_id, body=f"rep {i}") for i in range(40)]
        settled(stack, *sent)
        assert any(l.get("msg") == "event processed" and l.get("event_type") == "dm.message.sent"
                   for l in second.logs()), "the second replica took part"
    finally:
        second.terminate()
    # Then every message has its own place 1..40, in the order they were stored
    rows = query(stack.db, "SELECT seq, created_at FROM messages WHERE conversation_id = %s ORDER BY seq",
                 (conversation_id,))
    assert [r[0] for r in rows] == list(range(1, 41))
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert query(stack.db, "SELECT last_seq FROM conversations WHERE conversation_id = %s", (conversation_id,)) == [(40,)]
    assert none_dead(stack, bus, *sent)


# ---- bad input, races and logs ------------------------------------------------------------------

def test_bad_input_is_dead_lettered_with_its_reason_and_the_next_event_lands(stack, bus):
    alice, bob = user(), user()
    opened = start(bus, alice, [bob])
    conversation_id = opened["data"]["conversation_id"]
    settled(stack, opened)
    # Straight to the exchange: the worker does not trust the wire
    bad = {"blank body": send(bus, alice, conversation_id, body=" \n\t "),
           "long body": send(bus, alice, conversation_id, body="x" * 4001),
           "self listed": start(bus, alice, [bob, alice]),
           "twice listed": start(bus, alice, [bob, bob.upper()]),
           "fifty others": start(bus, alice, [user() for _ in range(50)])}
    good = send(bus, alice, conversation_id, body="y" * 4000)
    dead = dead_letters(stack, bus, *bad.values())
    assert {name: (dead[e["client_generated_id"]]["x-dead-reason"], dead[e["client_generated_id"]]["x-dead-field"])
            for name, e in bad.items()} == {
        "blank body": ("invalid", "data.body"), "long body": ("invalid", "data.body"),
        "self listed": ("invalid", "data.participant_ids"), "twice listed": ("invalid", "data.participant_ids"),
        "fifty others": ("invalid", "data.participant_ids")}
    settled(stack, good)
    assert messages(stack, conversation_id) == [(good["data"]["message_id"], alice, 1)]
    refused_starts = [bad[name]["data"]["conversation_id"] for name in ("self listed", "twice listed", "fifty others")]
    assert query(stack.db, "SELECT count(*) FROM conversations WHERE conversation_id = ANY(%s::uuid[])",
                 (refused_starts,)) == [(0,)]
    # Through the ingress, a blank body is refused before it is queued, and outcome events cannot be forged
    blank = event("dm.message.sent", user_id=alice, data={"conversation_id": conversation_id,
                                                          "message_id": str(uuid.uuid4()), "body": "   "})
    status, body, _ = stack.post(alice, blank)
    assert (status, body["error"], body["field"]) == (422, "schema_violation", "data.body")
    forged = event("dm.message.persisted", user_id=alice, data={})
    assert stack.post(alice, forged)[1]["error"] == "event_type_not_allowed"


def test_a_message_racing_its_conversation_is_retried_and_an_orphan_dead_lettered(stack, bus):
    alice, bob = user(), user()
    conversation_id = str(uuid.uuid4())
    # When the message arrives before the conversation it belongs to
    early = send(bus, bob, conversation_id, body="first!")
    orphan = send(bus, bob, str(uuid.uuid4()), body="into the void")
    wait_for(lambda: any(l.get("msg") == "event retried" and l.get("client_generated_id") == early["client_generated_id"]
                         for l in stack.worker.logs()), message="early message retried")
    opened = start(bus, alice, [bob], conversation_id=conversation_id)
    # Then it is stored once the conversation is
    settled(stack, opened, early)
    assert messages(stack, conversation_id) == [(early["data"]["message_id"], bob, 1)]
    # And a message whose conversation never comes is dead-lettered after the bounded retries
    headers = dead_letters(stack, bus, orphan, timeout=30)[orphan["client_generated_id"]]
    assert headers["x-dead-reason"] == "not_found" and headers["x-attempts"] == 3
    stack.bodies.append("into the void")


def test_message_bodies_never_appear_in_the_workers_log(stack, bus):
    alice, bob, mallory = user(), user(), user()
    secret = f"my-gym-locker-code-{uuid.uuid4().hex}"
    opened = start(bus, alice, [bob])
    conversation_id = opened["data"]["conversation_id"]
    # Every path a body takes: stored, sent again, refused, invalid, retried, read back
    sent = send(bus, alice, conversation_id, body=secret)
    settled(stack, opened, sent)
    again = send(bus, alice, conversation_id, body=secret, message_id=sent["data"]["message_id"])
    refused = send(bus, mallory, conversation_id, body=secret)
    too_long = send(bus, alice, conversation_id, body=secret + "x" * 4000)
    orphan = send(bus, alice, str(uuid.uuid4()), body=secret)
    status, body, _ = stack.page(bob, conversation_id, limit=5)
    assert status == 200 and body["messages"][0]["body"] == secret
    dead_letters(stack, bus, refused, too_long, orphan, timeout=30)
    settled(stack, again)
    # Then the worker logged each outcome, never the text (nor any body sent in this module)
    logged = "".join(proc.text() for proc in stack.workers)
    assert "event dead-lettered" in logged and "event retried" in logged and "query answered" in logged
    assert "my-gym-locker-code" not in logged
    assert [b for b in stack.bodies if b in logged] == []
