"""What comes back to the app, through the real ingress, settings, dm and notify workers: receipts
for the events it sent, and its inbox, read at once or by a long poll that wakes on the commit."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.support.db import query
from tests.support import auth
from tests.support.events import SEED_DATA, event
from tests.support.http import call
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import wait_for
from tests.support.http import ready
from tests.support.net import free_port

EVENTS, RECEIPTS = "/api/v1/notify/events", "/api/v1/receipts"


class Stack:
    def __init__(self, env, secret):
        self.env, self.secret, self.port = env, secret, int(env["PORT"])

    def token(self, user):
        return auth.encode(self.secret, user)

    def post(self, user, body):
        status, answer, _ = call(self.port, "POST", EVENTS, self.token(user), body)
        assert status == 202, answer
        return answer

    def receipts(self, user, events):
        status, answer, _ = call(self.port, "POST", RECEIPTS, self.token(user), {"events": [
            {"client_generated_id": e["client_generated_id"], "event_type": e["event_type"]} for e in events]})
        assert status == 200, answer
        return answer["receipts"]

    def inbox(self, user, **params):
        query_string = "&".join(f"{k}={v}" for k, v in params.items())
        return call(self.port, "GET", f"/api/v1/inbox?{query_string}", self.token(user))


@pytest.fixture
def stack(base_env, make_database):
    env = {**base_env, "PORT": str(free_port()), "HEALTH_PORT": "0",
           "SETTINGS_DATABASE_URL": make_database("settings"), "DM_DATABASE_URL": make_database("dm"),
           "NOTIFY_DATABASE_URL": make_database("notify")}
    run_cli("topology", env=env)
    procs = [workers_cli("run", name, env=env) for name in ("settings", "dm", "notify")]
    procs.append(workers_cli("serve", env=env))
    try:
        wait_for(lambda: ready(int(env["PORT"])), message="ingress ready")
        for proc in procs[:3]:
            wait_for(lambda: any(l.get("msg") == "answering queries" for l in proc.logs()), message="queries")
        yield Stack(env, base_env["JWT_SECRET"])
    finally:
        for proc in procs:
            proc.terminate()


def test_each_event_reads_back_applied_rejected_or_pending_and_only_to_its_sender(stack):
    alice, mallory = str(uuid.uuid4()), str(uuid.uuid4())
    applied = event(user_id=alice)
    conflicting = {**event(user_id=alice, event_id=applied["client_generated_id"]),
                   "data": {**SEED_DATA, "age": 99}}
    stranger_dm = event("dm.message.sent", user_id=alice, data={
        "conversation_id": str(uuid.uuid4()), "message_id": str(uuid.uuid4()), "body": "hi"})
    never_sent = event(user_id=alice)
    stack.post(alice, applied)
    wait_for(lambda: stack.receipts(alice, [applied])[0]["status"] == "applied", message="applied")
    stack.post(alice, conflicting)
    stack.post(alice, applied)  # a duplicate is still applied
    stack.post(alice, stranger_dm)  # no such conversation: not_found once its retries are spent
    wait_for(lambda: stack.receipts(alice, [stranger_dm])[0]["status"] == "rejected", timeout=30,
             message="the dm rejected")
    first, dm, pending = stack.receipts(alice, [applied, stranger_dm, never_sent])
    assert first["status"] == "applied" and first["at"]  # the conflicting re-send did not undo it
    assert (dm["status"], dm["reason"]) == ("rejected", "not_found") and dm["detail"]
    assert "Traceback" not in dm["detail"] and "SELECT" not in dm["detail"].upper()
    assert pending == {"client_generated_id": never_sent["client_generated_id"], "event_type": never_sent["event_type"],
                       "status": "pending"}
    # only the sender sees a receipt
    assert [r["status"] for r in stack.receipts(mallory, [applied, stranger_dm])] == ["pending", "pending"]
    status, one, _ = call(stack.port, "GET", f"/api/v1/events/{stranger_dm['client_generated_id']}"
                          f"?event_type=dm.message.sent", stack.token(alice))
    assert status == 200 and one["status"] == "rejected"
    # and the rejection reached the sender's inbox
    wait_for(lambda: [i for i in stack.inbox(alice)[1]["items"] if i["event_type"] == "event.rejected"],
             message="event.rejected in the inbox")


def test_a_direct_message_reaches_each_recipient_once_and_not_the_sender(stack):
    sender, bob, carol = (str(uuid.uuid4()) for _ in range(3))
    conversation = str(uuid.uuid4())
    stack.post(sender, event("dm.conversation.started", user_id=sender, data={
        "conversation_id": conversation, "participant_ids": [bob, carol]}))
    message = event("dm.message.sent", user_id=sender, data={
        "conversation_id": conversation, "message_id": str(uuid.uuid4()), "body": "leg day at 6?"})
    stack.post(sender, message)
    stack.post(sender, message)  # a retry of the same send

    def messages(user):
        status, page, _ = stack.inbox(user)
        assert status == 200, page
        return [i for i in page["items"] if i["event_type"] == "dm.message.persisted"]

    for user in (bob, carol):
        wait_for(lambda: messages(user), message="the message in the inbox")
    time.sleep(1)
    assert [len(messages(u)) for u in (bob, carol, sender)] == [1, 1, 0]


def test_a_waiting_inbox_request_returns_within_a_second_of_the_commit(stack):
    sender, bob = str(uuid.uuid4()), str(uuid.uuid4())
    conversation = str(uuid.uuid4())
    stack.post(sender, event("dm.conversation.started", user_id=sender, data={
        "conversation_id": conversation, "participant_ids": [bob]}))
    status, page, _ = stack.inbox(bob)
    wait_for(lambda: stack.inbox(bob)[1]["items"], message="the conversation item")
    cursor = stack.inbox(bob)[1]["next_cursor"]
    answered, committed = {}, {}

    def long_poll():
        answered["response"] = stack.inbox(bob, after=cursor, wait=20)
        answered["at"] = time.monotonic()

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(1)  # it is waiting now
    stack.post(sender, event("dm.message.sent", user_id=sender, data={
        "conversation_id": conversation, "message_id": str(uuid.uuid4()), "body": "now?"}))
    notify_db = stack.env["NOTIFY_DATABASE_URL"]
    wait_for(lambda: query(notify_db, "SELECT count(*) FROM inbox_items WHERE user_id = %s", (bob,))[0][0] == 2,
             interval=0.01, message="notify committed the message")
    committed["at"] = time.monotonic()
    poller.join(25)
    status, page, _ = answered["response"]
    assert status == 200 and [i["event_type"] for i in page["items"]] == ["dm.message.persisted"]
    assert answered["at"] - committed["at"] < 1.0


def test_a_long_poll_with_nothing_to_return_waits_its_time_and_answers_empty(stack):
    user = str(uuid.uuid4())
    started = time.monotonic()
    status, page, _ = stack.inbox(user, wait=2)
    elapsed = time.monotonic() - started
    assert status == 200 and page["items"] == [] and 1.9 <= elapsed < 4
    assert stack.inbox(user, wait=26)[0] == 400 and stack.inbox(user, after="not%20a%20cursor")[0] == 400
