"""notify worker on the real broker and databases: outcome events land once in the right users'
inboxes, pages run oldest first with a cursor, the inbox stays bounded and expires, and an
inbox.updated wake-up follows each commit.

One notify worker (with a small per-user bound), one dm worker, a vhost and their databases
serve the whole module; each test works with users of its own."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import psycopg2
import pytest

from shared import contracts
from workers.ops import migrate
from shared.envelope import rfc3339
from tests.support.db import PG, drop_database, query
from tests.support import rabbit
from tests.support.events import dumps, event
from tests.support.processes import workers_cli
from tests.support.rabbit import wait_for
from tests.support.processes import answering_queries

MAX_ITEMS = 5


class Stack:
    def __init__(self, env: dict):
        self.env = env
        self.db, self.dm_db = env["NOTIFY_DATABASE_URL"], env["DM_DATABASE_URL"]
        self.workers: list = []

    def start_worker(self, name: str):
        proc = workers_cli("run", name, env=self.env)
        self.workers.append(proc)
        wait_for(lambda: any(l.get("msg") == "consuming" for l in proc.logs()), message=f"{name} worker consuming")
        wait_for(lambda: answering_queries(proc), message=f"{name} worker answering queries")
        return proc


@pytest.fixture(scope="module")
def stack(jwt_secret):
    vhost, url = rabbit.create_vhost()
    names = {d: f"{d}_test_{uuid.uuid4().hex[:10]}" for d in ("notify", "dm")}
    env = {"RABBITMQ_URL": url, "NOTIFY_DATABASE_URL": PG + names["notify"], "DM_DATABASE_URL": PG + names["dm"],
           "LOG_LEVEL": "INFO", "RETRY_DELAYS_S": "1,2", "MAX_ATTEMPTS": "3", "OUTBOX_RELAY_INTERVAL_S": "1",
           "PREFETCH": "50", "PYTHONUNBUFFERED": "1", "INBOX_MAX_ITEMS_PER_USER": str(MAX_ITEMS),
           "INBOX_PRUNE_INTERVAL_S": "1"}
    for domain, name in names.items():
        migrate.ensure_database(PG + name)
        migrate.apply(domain, PG + name)
    stack = Stack(env)
    try:
        stack.start_worker("notify")
        stack.start_worker("dm")
        yield stack
    finally:
        for proc in stack.workers:
            proc.terminate()
        rabbit.delete_vhost(vhost)
        for name in names.values():
            drop_database(name)


@pytest.fixture
def bus(stack):
    client = rabbit.Rabbit(stack.env["RABBITMQ_URL"])
    yield client
    client.close()


def user() -> str:
    return str(uuid.uuid4())


def publish(bus, event_type: str, data: dict, user_id: str, source: str = "frontend", body: dict | None = None) -> dict:
    body = body or event(event_type, data=data, user_id=user_id, source_service=source)
    bus.publish("app.events", event_type, dumps(body), message_id=body["client_generated_id"], type=event_type)
    return body


def outcome(bus, event_type: str, data: dict, user_id: str, source: str) -> dict:
    """An outcome event as its worker publishes it (here straight to app.events)."""
    return publish(bus, event_type, data, user_id, source)


def processed(db: str, *events: dict) -> None:
    """Wait until the worker on `db` committed these events and published what they emitted."""
    ids = [e["client_generated_id"] for e in events]
    wait_for(lambda: query(db, "SELECT count(*) FROM idempotency_keys WHERE client_generated_id = ANY(%s::uuid[])",
                           (ids,))[0][0] == len(ids), message=f"{len(ids)} event(s) processed")
    wait_for(lambda: query(db, "SELECT count(*) FROM outbox")[0][0] == 0, message="outbox published")


def inbox(stack, user_id: str) -> list[tuple]:
    """(event_type, item id, data) of a user's items, oldest first, straight from the database."""
    return query(stack.db, "SELECT event_type, item_id::text, data FROM inbox_items WHERE user_id = %s ORDER BY seq",
                 (user_id,))


def ask(bus, user_id: str, **params) -> dict:
    """inbox.get as the ingress sends it: on app.queries, answered through reply_to."""
    reply_to = bus.channel.queue_declare("", exclusive=True).method.queue
    bus.publish("app.queries", "inbox.get", orjson.dumps({"user_id": user_id, "params": params}),
                reply_to=reply_to, correlation_id=str(uuid.uuid4()), type="inbox.get")
    wait_for(lambda: bus.depth(reply_to) >= 1, message="inbox.get answered")
    ((_, body),) = bus.drain(reply_to)
    return orjson.loads(body)


def wakeups(bus, queue: str) -> list[dict]:
    return [orjson.loads(body) for _, body in bus.drain(queue)]


def dm_message(sender: str, recipients: list[str], body: str = "Rack at 6?") -> dict:
    return {"conversation_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4()), "sender_id": sender,
            "body": body, "created_at": rfc3339(datetime.now(timezone.utc)), "recipient_ids": recipients}


# ---- the contract --------------------------------------------------------------------------------

def test_notify_takes_every_outcome_meant_for_the_app_and_nothing_else():
    from workers.notify.worker import RECIPIENTS
    assert set(RECIPIENTS) == contracts.inbox_event_types()
    for name, schema in contracts.data_schemas().items():
        named = schema.get("x-consumer")
        assert named is None or isinstance(named, str) or (
            isinstance(named, list) and named and all(isinstance(n, str) for n in named)), name
    assert contracts.consumers(contracts.data_schemas()["media.failed"]) == ("video", "frontend")
    # the upload form travels in the HTTP answer; the wake-up is for the ingress, not an item
    assert not {"media.upload_url.issued", "inbox.updated"} & set(RECIPIENTS)


# ---- who gets what -------------------------------------------------------------------------------

def test_a_direct_message_lands_once_in_each_recipients_inbox_and_not_the_senders(stack, bus):
    woken = bus.tap("app.events", "inbox.updated")
    sender, first, second = user(), user(), user()
    conversation_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    # Given a conversation started and a message sent, through the real dm worker
    started = publish(bus, "dm.conversation.started", {"conversation_id": conversation_id,
                                                        "participant_ids": [first, second]}, sender)
    processed(stack.dm_db, started)
    sent = publish(bus, "dm.message.sent", {"conversation_id": conversation_id, "message_id": message_id,
                                            "body": "See you at the rack at 6?"}, sender)
    processed(stack.dm_db, sent)
    # Then inbox.updated wake-ups name both recipients, each published once their items were committed
    named = set()

    def woken_up() -> bool:
        for wakeup in wakeups(bus, woken):
            assert (wakeup["source_service"], wakeup["event_type"]) == ("notify", "inbox.updated")
            for u in wakeup["data"]["user_ids"]:
                assert inbox(stack, u), "a wake-up came before its items were committed"
                named.add(u)
        return {first, second} <= named and len(inbox(stack, first)) == len(inbox(stack, second)) == 2
    wait_for(woken_up, message="inbox.updated naming both recipients after both items")
    assert sender not in named
    # And each recipient has the conversation, then the message, once; the sender has nothing
    for recipient in (first, second):
        (conversation, _, _), (kind, _, data) = inbox(stack, recipient)
        assert (conversation, kind) == ("dm.conversation.persisted", "dm.message.persisted")
        assert data["message_id"] == message_id and data["sender_id"] == sender
        assert data["body"] == "See you at the rack at 6?" and data["conversation_id"] == conversation_id
    assert inbox(stack, sender) == []


def test_the_same_outcome_twice_is_one_item(stack, bus):
    sender, recipient = user(), user()
    message = event("dm.message.persisted", data=dm_message(sender, [recipient]), user_id=sender, source_service="dm")
    # Given an outcome delivered, then redelivered (same id, same payload)
    for _ in range(2):
        publish(bus, "dm.message.persisted", {}, sender, body=message)
    processed(stack.db, message)
    # And replayed once more after its idempotency key is gone (a replay from a backup, say)
    query(stack.db, "DELETE FROM idempotency_keys WHERE client_generated_id = %s", (message["client_generated_id"],))
    publish(bus, "dm.message.persisted", {}, sender, body=message)
    processed(stack.db, message)
    # Then the recipient holds it once, and its number was not used up twice
    wait_for(lambda: len(inbox(stack, recipient)) >= 1, message="the item")
    assert [i for _, i, _ in inbox(stack, recipient)] == [message["client_generated_id"]]
    assert query(stack.db, "SELECT last_seq FROM inboxes WHERE user_id = %s", (recipient,)) == [(1,)]


def test_a_comment_goes_to_the_posts_owner_unless_they_wrote_it(stack, bus):
    owner, commenter = user(), user()
    post_id = str(uuid.uuid4())

    def comment(author: str) -> dict:
        return outcome(bus, "comment.persisted", {
            "comment_id": str(uuid.uuid4()), "post_id": post_id, "post_owner_id": owner, "parent_comment_id": None,
            "author_id": author, "body": "Nice depth!", "created_at": rfc3339(datetime.now(timezone.utc))},
            author, "video")

    theirs, own = comment(commenter), comment(owner)
    processed(stack.db, theirs, own)
    assert [(t, i) for t, i, _ in inbox(stack, owner)] == [("comment.persisted", theirs["client_generated_id"])]
    assert inbox(stack, commenter) == []


def test_owner_addressed_outcomes_land_with_their_user(stack, bus):
    owner, viewer = user(), user()
    failed = outcome(bus, "media.failed", {"video_id": str(uuid.uuid4()), "reason": "The file is not a video.",
                                           "code": "not_a_video"}, owner, "transcode")
    locked = outcome(bus, "feed.access.locked", {"feed_owner_id": owner, "failed_attempts": 20, "window_s": 900,
                                                 "locked_until": rfc3339(datetime.now(timezone.utc))}, owner, "settings")
    rejected = outcome(bus, "event.rejected", {
        "client_generated_id": str(uuid.uuid4()), "event_type": "comment.created", "reason": "not_found",
        "field": None, "detail": "post does not exist", "worker": "video"}, viewer, "video")
    processed(stack.db, failed, locked, rejected)
    assert sorted(t for t, _, _ in inbox(stack, owner)) == ["feed.access.locked", "media.failed"]
    assert [(t, d["reason"]) for t, _, d in inbox(stack, viewer)] == [("event.rejected", "not_found")]


# ---- reading -------------------------------------------------------------------------------------

def test_pages_run_oldest_first_and_the_cursor_holds_its_place(stack, bus):
    reader = user()
    sent = []
    for n in range(3):
        sent.append(outcome(bus, "dm.message.persisted", dm_message(user(), [reader], f"message {n}"), user(), "dm"))
        processed(stack.db, sent[-1])  # one at a time: the order they arrive in is the order they are kept
    first = ask(bus, reader, limit=2)
    assert first["status"] == "ok"
    page = first["result"]
    assert [i["id"] for i in page["items"]] == [e["client_generated_id"] for e in sent[:2]]
    item = page["items"][0]
    assert set(item) == {"id", "event_type", "data", "at"} and item["data"]["body"] == "message 0"
    assert datetime.fromisoformat(item["at"].replace("Z", "+00:00")) == datetime.fromisoformat(
        sent[0]["timestamp"].replace("Z", "+00:00"))
    rest = ask(bus, reader, after=page["next_cursor"], limit=2)["result"]
    assert [i["id"] for i in rest["items"]] == [sent[2]["client_generated_id"]]
    # Nothing new: the same cursor back, to poll with
    empty = ask(bus, reader, after=rest["next_cursor"])["result"]
    assert empty == {"items": [], "next_cursor": rest["next_cursor"]}
    # A new item after it shows up on that cursor
    later = outcome(bus, "dm.message.persisted", dm_message(user(), [reader], "later"), user(), "dm")
    processed(stack.db, later)
    assert [i["id"] for i in ask(bus, reader, after=rest["next_cursor"])["result"]["items"]] == [
        later["client_generated_id"]]
    # Someone else's inbox is not theirs, and a user with none gets an empty page
    assert ask(bus, user())["result"] == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("cursor", ["not-a-cursor", "aW5ib3h8LTE", "ZG18Mw", "%%%"])
def test_a_cursor_this_api_did_not_give_out_is_refused_on_after(stack, bus, cursor):
    answer = ask(bus, user(), after=cursor)
    assert (answer["status"], answer["error"], answer["field"]) == ("error", "invalid", "after")


def test_a_limit_out_of_range_is_refused(stack, bus):
    answer = ask(bus, user(), limit=101)
    assert answer["status"] == "error" and answer["field"] == "params.limit"


# ---- bounds --------------------------------------------------------------------------------------

def test_a_user_keeps_at_most_the_newest_items(stack, bus):
    busy = user()
    sent = []
    for n in range(MAX_ITEMS + 3):
        sent.append(outcome(bus, "dm.message.persisted", dm_message(user(), [busy], f"#{n}"), user(), "dm"))
        if n % 2:
            processed(stack.db, *sent)
    processed(stack.db, *sent)
    kept = [i for _, i, _ in inbox(stack, busy)]
    assert len(kept) == MAX_ITEMS
    page = ask(bus, busy, limit=100)["result"]["items"]
    assert [i["data"]["body"] for i in page] == [f"#{n}" for n in range(3, MAX_ITEMS + 3)]


def test_prune_removes_items_older_than_the_retention(stack, bus):
    from workers.notify.worker import prune_inbox
    someone = user()
    now = datetime.now(timezone.utc)

    def program(at: datetime) -> dict:
        return publish(bus, "program.persisted", {}, someone, body=event(
            "program.persisted", data={"program_id": str(uuid.uuid4()), "owner_id": someone, "revision": 1,
                                       "deleted": False}, user_id=someone, source_service="program",
            timestamp=rfc3339(at)))

    # Given an item of two days ago and one of now
    old, new = program(now - timedelta(days=2)), program(now)
    processed(stack.db, old, new)
    # When items older than a day are pruned, in batches of one
    conn = psycopg2.connect(stack.db)
    try:
        assert prune_inbox(conn, now, retention_s=86400, batch=1) == 1
        assert prune_inbox(conn, now, retention_s=86400, batch=1) == 0
        conn.commit()
    finally:
        conn.close()
    # Then only the new one is left
    assert [i for _, i, _ in inbox(stack, someone)] == [new["client_generated_id"]]


def test_the_worker_prunes_expired_items_on_its_own(stack, bus):
    someone = user()
    # Given an item older than the retention (30 days by default)
    query(stack.db, "INSERT INTO inbox_items (user_id, seq, item_id, event_type, data, at) "
                    "VALUES (%s, 1, %s, 'media.failed', '{}', now() - interval '31 days')", (someone, str(uuid.uuid4())))
    # When the worker goes on handling events (it prunes every INBOX_PRUNE_INTERVAL_S, 1 s here)
    def pruned() -> bool:
        processed(stack.db, outcome(bus, "program.persisted", {"program_id": str(uuid.uuid4()), "owner_id": user(),
                                                               "revision": 1, "deleted": False}, user(), "program"))
        return inbox(stack, someone) == []
    # Then the old item goes
    wait_for(pruned, timeout=15, interval=0.3, message="expired item pruned")


def test_one_wake_up_per_transaction_names_every_recipient_of_the_batch(make_database):
    """The fast path commits a batch in one transaction: one inbox.updated for all of it."""
    from workers.runtime import db
    from shared.envelope import Envelope, new_event
    from workers.runtime.handler import Context, Cursor
    from workers.notify.worker import BATCHED
    from workers.notify.worker import deliver

    conn = db.connect(make_database("notify"))
    try:
        owners = sorted(user() for _ in range(3))
        causes = [new_event("media.failed", o, {"video_id": str(uuid.uuid4()), "reason": "Too long.", "code": "too_long"},
                            "transcode") for o in owners]

        def run(events: list[Envelope]) -> list[Envelope]:
            ctx = Context(conn, "notify", Cursor(conn, BATCHED))
            for e in events:
                deliver(ctx, e)
            ctx.flush()
            conn.rollback()
            return ctx.outbox

        (wakeup,) = run(causes)
        assert (wakeup.event_type, wakeup.data) == ("inbox.updated", {"user_ids": owners})
        assert [e.id for e in run(causes)] == [wakeup.id]  # the same batch again: the same id
    finally:
        conn.close()
