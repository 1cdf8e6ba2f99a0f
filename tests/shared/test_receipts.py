"""Receipts (workers/runtime/receipts.py) on the real broker and databases: every worker answers
`<worker>.receipts` applied for what it committed (a duplicate too), rejected with reason, field
and detail for what the runtime dead-lettered (and tells the sender with `event.rejected`), and
nothing for another user's ids or for a message nobody can be named as the sender of."""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import orjson
import pika
import pytest

from shared import contracts
from workers.runtime import receipts
from shared.config import Config
from workers.runtime.consumer import Consumer
from shared.errors import Forbidden, NotYet, TransientError
from workers.runtime.handler import WorkerSpec
from tests.support.db import query
from tests.support.events import SEED_DATA, dumps, event
from tests.support.processes import run_cli
from tests.support.rabbit import wait_for
from tests.support.tcpproxy import TcpProxy
from tests.support.processes import answering_queries


def new_id() -> str:
    return str(uuid.uuid4())


# ---- asking, as the ingress will ------------------------------------------------------------

def ask(url: str, worker: str, user: str, ids: list[str], timeout: float = 10.0) -> dict:
    """Publish `<worker>.receipts` to app.queries with a reply queue of our own; the answer."""
    name = receipts.query_name(worker)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        reply_to = channel.queue_declare("", exclusive=True).method.queue
        correlation = uuid.uuid4().hex
        channel.basic_publish("app.queries", name, orjson.dumps({"user_id": user, "params": {"ids": ids}}),
                              pika.BasicProperties(content_type="application/json", delivery_mode=1, type=name,
                                                   reply_to=reply_to, correlation_id=correlation))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, props, body = channel.basic_get(reply_to, auto_ack=True)
            if method is not None and props.correlation_id == correlation:
                return orjson.loads(body)
            connection.sleep(0.05)
        raise AssertionError(f"no answer to {name} within {timeout}s")
    finally:
        connection.close()


def receipts_of(url: str, worker: str, user: str, ids: list[str]) -> dict[str, dict]:
    answer = ask(url, worker, user, ids)
    assert answer["status"] == "ok", answer
    return {r["client_generated_id"]: r for r in answer["result"]["receipts"]}


def wait_receipt(url: str, worker: str, user: str, event_id: str, status: str, timeout: float = 30) -> dict:
    return wait_for(lambda: (receipts_of(url, worker, user, [event_id]).get(event_id) or {}).get("status") == status
                    and receipts_of(url, worker, user, [event_id])[event_id], timeout=timeout,
                    message=f"{worker} receipt {status} for {event_id}")


def send(rmq, body: dict) -> dict:
    rmq.publish("app.events", body["event_type"], dumps(body), message_id=body["client_generated_id"],
                type=body["event_type"])
    return body


def rejected_events(rmq, queue: str, count: int) -> dict[str, dict]:
    """client_generated_id of the rejected event → the event.rejected envelope, for `count` of them."""
    wait_for(lambda: rmq.depth(queue) >= count, message=f"{count} event.rejected")
    out = {}
    for _, body in rmq.drain(queue):
        e = orjson.loads(body)
        contracts.validate(e)
        out[e["data"]["client_generated_id"]] = e
    return out


def assert_safe(detail: str) -> None:
    """A detail for people: no SQL, no trace, no exception type."""
    lowered = detail.lower()
    for marker in ("traceback", "select ", "insert ", "constraint", "violates", "relation", "psycopg", "error:"):
        assert marker not in lowered, detail


# ---- every worker: applied, a duplicate applied, another user's id absent -------------------

def _settings(user):
    return "user.settings.submitted", SEED_DATA


def _video(user):
    return "media.upload_requested", {"video_id": new_id(), "filename": "leg-day.mp4", "content_type": "video/mp4",
                                      "size_bytes": 1000, "caption": "Leg day"}


def _program(user):
    return "program.created", {"program_id": new_id(), "name": "Strength 5x5"}


def _dm(user):
    return "dm.conversation.started", {"conversation_id": new_id(), "participant_ids": [new_id()]}


def _machine(user):
    return "machine.note.created", {"note_id": new_id(), "machine_id": "rack-1", "body": "Seat at 4"}


def _ai(user):
    return "ai.prompt.submitted", {"prompt_id": new_id(), "prompt": "How many sets of squats?"}


def _transcode(user):
    # the upload the video worker verified is gone: media.failed, committed like any outcome
    video_id = new_id()
    return "media.upload.verified", {"video_id": video_id, "key": f"uploads/{user}/{video_id}/source",
                                     "size_bytes": 1000, "content_type": "video/mp4"}


EVENTS = {"settings": _settings, "video": _video, "program": _program, "dm": _dm, "machine": _machine,
          "ai": _ai, "transcode": _transcode}
NEEDS_STORAGE = {"video", "transcode"}


@pytest.fixture
def worker(start_worker, make_database, request, tmp_path):
    """run(name) → (process, database) of a worker answering its queries."""
    def run(name: str, **env):
        from workers import load
        domain = load(name).database
        db = make_database(domain)
        if name in NEEDS_STORAGE:
            env.update(request.getfixturevalue("s3_env"))
        if name == "transcode":
            scratch = tmp_path / "scratch"
            scratch.mkdir()
            env["TRANSCODE_TMPDIR"] = str(scratch)
        proc = start_worker(name, **{f"{domain.upper()}_DATABASE_URL": db, **env})
        wait_for(lambda: any(l.get("msg") == "consuming" for l in proc.logs()) and answering_queries(proc),
                 timeout=30, message=f"{name} consuming and answering queries")
        return proc, db
    return run


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_worker_answers_applied_for_what_it_committed_and_nothing_for_others(name, worker, rmq, vhost):
    proc, db = worker(name)
    me, other = new_id(), new_id()
    mine = send(rmq, event(*EVENTS[name](me), user_id=me))
    theirs = send(rmq, event(*EVENTS[name](other), user_id=other))
    # Then each sender's receipt says applied, with the event type and when
    receipt = wait_receipt(vhost, name, me, mine["client_generated_id"], "applied")
    assert receipt["event_type"] == mine["event_type"] and receipt["at"].endswith("Z")
    assert set(receipt) == {"client_generated_id", "event_type", "status", "at"}
    wait_receipt(vhost, name, other, theirs["client_generated_id"], "applied")
    # And a duplicate is skipped, still applied
    send(rmq, mine)
    wait_for(lambda: any(l.get("msg") == "duplicate skipped" and l.get("client_generated_id") == mine["client_generated_id"]
                         for l in proc.logs()), message="duplicate skipped")
    # And another user's id, or one never sent, is absent: the ingress says pending
    never = new_id()
    got = receipts_of(vhost, name, me, [mine["client_generated_id"], theirs["client_generated_id"], never])
    assert list(got) == [mine["client_generated_id"]] and got[mine["client_generated_id"]]["status"] == "applied"
    assert receipts_of(vhost, name, other, [mine["client_generated_id"]]) == {}
    assert query(db, "SELECT count(*) FROM rejections") == [(0,)]
    assert rmq.depth(f"{name}.dead") == 0


def test_a_receipts_query_is_checked_against_its_schema(worker, vhost):
    worker("settings")
    me = new_id()
    too_many = ask(vhost, "settings", me, [new_id() for _ in range(101)])
    assert (too_many["status"], too_many["error"], too_many["field"]) == ("error", "invalid", "params.ids")
    not_ids = ask(vhost, "settings", me, ["1; DROP TABLE rejections"])
    assert (not_ids["status"], not_ids["error"]) == ("error", "invalid")
    # ids in any case, repeated: one receipt each, in the order asked
    assert ask(vhost, "settings", me, [me.upper(), me])["result"] == {"receipts": []}


# ---- rejections by the runtime: schema, version, conflict; nothing for a nameless message --

def test_rejections_answer_rejected_and_tell_the_sender(worker, rmq, vhost):
    tap = rmq.tap("app.events", "event.rejected")
    proc, db = worker("settings")
    me = new_id()
    applied = send(rmq, event(user_id=me))
    wait_receipt(vhost, "settings", me, applied["client_generated_id"], "applied")
    bad = {
        "invalid": send(rmq, event(user_id=me, data={**SEED_DATA, "age": 500})),
        "unsupported_version": send(rmq, event(user_id=me, schema_version="2.0.0")),
        "idempotency_conflict": send(rmq, event(user_id=me, event_id=applied["client_generated_id"],
                                                data={**SEED_DATA, "age": 30})),
    }
    told = rejected_events(rmq, tap, len(bad))
    got = receipts_of(vhost, "settings", me, [b["client_generated_id"] for b in bad.values()])
    expected_field = {"invalid": "data.age", "unsupported_version": "schema_version", "idempotency_conflict": None}
    dead = {p.message_id: p.headers for p, _ in rmq.drain("settings.dead")}
    for reason, body in bad.items():
        headers = dead[body["client_generated_id"]]
        outcome = told[body["client_generated_id"]]
        if reason == "idempotency_conflict":
            # the id's event did take effect: its receipt stays applied; the refused re-send is
            # told to the sender in their inbox
            assert got[body["client_generated_id"]]["status"] == "applied"
            detail = headers["x-dead-detail"]
        else:
            receipt = got[body["client_generated_id"]]
            assert (receipt["status"], receipt["reason"], receipt["field"], receipt["event_type"]) == (
                "rejected", reason, expected_field[reason], "user.settings.submitted"), receipt
            assert receipt["detail"] and receipt["at"].endswith("Z")
            # the same words as the dead letter's headers
            assert (headers["x-dead-reason"], headers["x-dead-detail"]) == (reason, receipt["detail"])
            detail = receipt["detail"]
        assert_safe(detail)
        # and the sender's inbox gets it: event.rejected addressed to them
        assert outcome["user_id"] == me and outcome["source_service"] == "settings"
        assert outcome["data"] == {"client_generated_id": body["client_generated_id"],
                                   "event_type": "user.settings.submitted", "reason": reason,
                                   "field": expected_field[reason], "detail": detail, "worker": "settings"}
    assert "500" in got[bad["invalid"]["client_generated_id"]]["detail"] or \
        "120" in got[bad["invalid"]["client_generated_id"]]["detail"]
    # another user asking about the same ids learns nothing
    assert receipts_of(vhost, "settings", new_id(), [b["client_generated_id"] for b in bad.values()]) == {}


def test_a_message_without_a_sender_is_dead_lettered_with_no_receipt_and_no_crash(worker, rmq, vhost):
    tap = rmq.tap("app.events", "event.rejected")
    proc, db = worker("settings")
    someone = new_id()
    rmq.publish("app.events", "user.settings.submitted", b"{not json", message_id=someone)
    rmq.publish("app.events", "user.settings.submitted", b"[1, 2]")
    rmq.publish("app.events", "user.settings.submitted",
                dumps({"event_type": "user.settings.submitted", "client_generated_id": someone, "user_id": "me"}))
    wait_for(lambda: rmq.depth("settings.dead") == 3, message="three dead letters")
    # the worker carries on
    after = send(rmq, event(user_id=someone))
    wait_receipt(vhost, "settings", someone, after["client_generated_id"], "applied")
    assert proc.alive()
    assert query(db, "SELECT count(*) FROM rejections") == [(0,)]
    assert rmq.depth(tap) == 0
    assert receipts_of(vhost, "settings", someone, [someone]) == {}


# ---- rejections by handlers: forbidden, not_found after retries, session_completed ----------

def test_handler_rejections_and_a_replay_that_succeeds(worker, rmq, vhost, base_env):
    tap = rmq.tap("app.events", "event.rejected")
    proc, db = worker("program")
    owner, stranger = new_id(), new_id()
    program_id, workout_id, session_id, late_program = new_id(), new_id(), new_id(), new_id()
    created = send(rmq, event("program.created", {"program_id": program_id, "name": "Strength",
                                                  "workouts": [{"workout_id": workout_id, "name": "Day 1",
                                                                "exercises": []}]}, user_id=owner))
    started = send(rmq, event("workout_session.started", {"session_id": session_id, "workout_id": workout_id},
                              user_id=owner))
    for e in (created, started):
        wait_receipt(vhost, "program", owner, e["client_generated_id"], "applied")
    done = send(rmq, event("workout_session.completed", {"session_id": session_id}, user_id=owner))
    wait_receipt(vhost, "program", owner, done["client_generated_id"], "applied")
    one_set = {"session_id": session_id, "set_id": new_id(), "exercise": "Squat", "reps": 5,
               "weight": {"value": 100, "unit": "kg"}}
    bad = {
        "forbidden": (stranger, send(rmq, event("program.updated", {"program_id": program_id, "name": "Mine"},
                                                user_id=stranger))),
        "session_completed": (owner, send(rmq, event("workout_session.set_logged", one_set, user_id=owner))),
        # a program that never comes: retried (RETRY_DELAYS_S 1,2; MAX_ATTEMPTS 3), then not_found
        "not_found": (owner, send(rmq, event("program.updated", {"program_id": late_program, "name": "Later"},
                                             user_id=owner))),
    }
    told = rejected_events(rmq, tap, len(bad))
    for reason, (sender, body) in bad.items():
        receipt = receipts_of(vhost, "program", sender, [body["client_generated_id"]])[body["client_generated_id"]]
        assert (receipt["status"], receipt["reason"], receipt["field"]) == ("rejected", reason, None), receipt
        assert_safe(receipt["detail"])
        assert told[body["client_generated_id"]]["user_id"] == sender
        assert told[body["client_generated_id"]]["data"]["detail"] == receipt["detail"]
    assert "start a new session" in told[bad["session_completed"][1]["client_generated_id"]]["data"]["detail"]
    assert late_program in told[bad["not_found"][1]["client_generated_id"]]["data"]["detail"]
    # the owner of the program learns nothing of the stranger's attempt
    assert receipts_of(vhost, "program", owner, [bad["forbidden"][1]["client_generated_id"]]) == {}
    # When what was missing arrives and the dead letter is replayed, applied wins over the rejection
    wait_receipt(vhost, "program", owner,
                 send(rmq, event("program.created", {"program_id": late_program, "name": "Late"},
                                 user_id=owner))["client_generated_id"], "applied")
    late = bad["not_found"][1]["client_generated_id"]
    wait_for(lambda: rmq.depth("program.dead") == 3, message="three dead letters")
    assert "replayed 1" in run_cli("dlq", "replay", "program", "--id", late, env=base_env).stdout
    assert wait_receipt(vhost, "program", owner, late, "applied")["event_type"] == "program.updated"
    assert query(db, "SELECT reason FROM rejections WHERE client_generated_id = %s", (late,)) == [("not_found",)]


# ---- the runtime itself: a row the database refuses, retries exhausted, an outage -----------

@pytest.fixture
def probe(vhost, settings_db):
    """run(handler, db_url=…) → a Consumer of the test's own ("probe") on the settings database."""
    query(settings_db, "CREATE TABLE probe (event_id uuid PRIMARY KEY, age int NOT NULL CHECK (age < 100))")
    started = []

    def run(handler, db_url=None):
        spec = WorkerSpec("probe", "settings", {"user.settings.submitted": handler, "program.persisted": handler})
        cfg = dataclasses.replace(Config(), rabbitmq_url=vhost, retry_delays_s=(1, 2), max_attempts=3, health_port=0)
        consumer = Consumer(spec, cfg, db_url or settings_db)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        started.append((consumer, thread))
        wait_for(consumer.consuming, message="probe consuming and answering")
        return consumer

    yield run
    for consumer, thread in started:
        consumer.stop()
        thread.join(30)


def probe_handler(ctx, e):
    if e.event_type == "program.persisted":
        raise Forbidden("not for this worker")
    age = e.data["age"]
    if age == 66:
        raise Forbidden("age 66 is someone else's")
    if age == 67:
        raise TransientError("downstream at 10.0.0.7:5432 timed out")
    if age == 68:
        raise NotYet("the thing age 68 refers to is not there (yet)")
    ctx.cursor.execute("INSERT INTO probe (event_id, age) VALUES (%s, %s)", (e.id, age))


def with_age(user: str, age: int) -> dict:
    return event(user_id=user, data={**SEED_DATA, "age": age})


def test_runtime_reasons_with_safe_details(probe, rmq, vhost, settings_db):
    tap = rmq.tap("app.events", "event.rejected")
    probe(probe_handler)
    me = new_id()
    sent = {"applied": send(rmq, with_age(me, 30)), "forbidden": send(rmq, with_age(me, 66)),
            "rejected_by_database": send(rmq, with_age(me, 110)),
            "retries_exhausted": send(rmq, with_age(me, 67)), "not_found": send(rmq, with_age(me, 68))}
    told = rejected_events(rmq, tap, 4)
    got = receipts_of(vhost, "probe", me, [e["client_generated_id"] for e in sent.values()])
    assert {e["client_generated_id"]: got[e["client_generated_id"]].get("reason", got[e["client_generated_id"]]["status"])
            for e in sent.values()} == {e["client_generated_id"]: reason for reason, e in sent.items()}
    for reason, e in sent.items():
        if reason != "applied":
            detail = got[e["client_generated_id"]]["detail"]
            assert_safe(detail)
            assert told[e["client_generated_id"]]["data"]["detail"] == detail
    # the database's words (table, constraint) and a dependency's address stay with the operator
    db_detail = got[sent["rejected_by_database"]["client_generated_id"]]["detail"]
    assert "probe" not in db_detail and "age" not in db_detail
    assert "10.0.0.7" not in got[sent["retries_exhausted"]["client_generated_id"]]["detail"]
    assert "not there" in got[sent["not_found"]["client_generated_id"]]["detail"]
    dead = {p.message_id: p.headers for p, _ in rmq.drain("probe.dead")}
    refused = dead[sent["rejected_by_database"]["client_generated_id"]]
    assert refused["x-dead-detail"] == db_detail and "probe_age_check" in refused["x-last-error"]


def test_database_down_at_dead_letter_time_holds_the_message_until_its_rejection_is_recorded(probe, rmq, vhost,
                                                                                             settings_db):
    proxy = TcpProxy("127.0.0.1", 5432)
    consumer = probe(probe_handler, db_url=settings_db.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
    tap = rmq.tap("app.events", "event.rejected")
    record = consumer.processor.record_rejections
    calls = []

    def outage_then_record(rejections):  # the database goes away right after the batch's own work
        calls.append(len(rejections))
        if len(calls) == 1:
            proxy.cut()
            threading.Timer(4, proxy.restore).start()
        return record(rejections)

    consumer.processor.record_rejections = outage_then_record
    me = new_id()
    forbidden = send(rmq, with_age(me, 66))
    wait_for(lambda: len(calls) >= 2, message="rejection retried")
    # held: not dead-lettered, not acked, while the database is away
    assert rmq.depth("probe.dead") == 0
    wait_for(lambda: rmq.depth("probe.dead") == 1, timeout=40, message="dead-lettered once the database is back")
    receipt = receipts_of(vhost, "probe", me, [forbidden["client_generated_id"]])[forbidden["client_generated_id"]]
    assert (receipt["status"], receipt["reason"]) == ("rejected", "forbidden")
    assert rejected_events(rmq, tap, 1)[forbidden["client_generated_id"]]["user_id"] == me
    assert query(settings_db, "SELECT count(*) FROM rejections") == [(1,)]
    proxy.close()


def test_a_refused_outcome_event_of_a_worker_gets_a_receipt_but_is_not_told_to_a_user(probe, rmq, vhost, settings_db):
    tap = rmq.tap("app.events", "event.rejected")
    probe(probe_handler)
    owner = new_id()
    outcome = send(rmq, event("program.persisted", {"program_id": new_id(), "owner_id": owner, "revision": 1,
                                                    "deleted": False}, user_id=owner, source_service="program"))
    wait_for(lambda: rmq.depth("probe.dead") == 1, message="dead-lettered")
    got = receipts_of(vhost, "probe", owner, [outcome["client_generated_id"]])
    assert got[outcome["client_generated_id"]]["reason"] == "forbidden"
    # published before the dead letter is forwarded: had it been emitted, it would be here by now
    assert rmq.depth(tap) == 0
    assert query(settings_db, "SELECT count(*) FROM outbox") == [(0,)]
