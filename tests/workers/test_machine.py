"""Machine worker on the real broker and database: private notes per gym machine (author only,
newest edit wins, deletion final) and equipment preferences (newest event wins), read back
through the ingress."""
from __future__ import annotations

import base64
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from workers.ops import migrate
from tests.support.db import processed, query
from tests.support.events import dumps, event, rfc3339
from tests.support.http import call
from tests.support.rabbit import wait_for
from tests.support.bus import dead_letters, outcomes, publish_body
from tests.support.processes import answering_queries

EVENTS = "/api/v1/notify/events"
BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)


# ---- helpers ----------------------------------------------------------------------------------

@pytest.fixture
def machine_worker(start_worker, make_database):
    """start(replicas=1, **env) → the database of running machine worker(s), consuming and answering."""
    def start(replicas: int = 1, **env) -> str:
        db = make_database("machine")
        for _ in range(replicas):
            proc = start_worker("machine", MACHINE_DATABASE_URL=db, **env)
            wait_for(lambda: any(l.get("msg") == "consuming" for l in proc.logs()) and answering_queries(proc),
                     message="machine worker consuming")
        return db
    return start


def user() -> str:
    return str(uuid.uuid4())


def at(seconds: float) -> str:
    """An envelope timestamp `seconds` after the test's fixed origin (an hour ago)."""
    return rfc3339(BASE + timedelta(seconds=seconds))


def publish(rmq, event_type: str, data: dict, author: str, ts: float = 0, body: dict | None = None) -> dict:
    return publish_body(rmq, body or event(event_type, data=data, user_id=author, timestamp=at(ts)))


def create(rmq, author: str, text: str = "seat on 4", machine: str = "QR:leg-press.7", ts: float = 0,
           **extra) -> str:
    note_id = str(uuid.uuid4())
    publish(rmq, "machine.note.created", {"note_id": note_id, "machine_id": machine, "body": text, **extra},
            author, ts)
    return note_id


def created(rmq, author: str, text: str, ts: float = 0) -> tuple[str, str]:
    """(note_id, a tap on machine.note.persisted that has seen the note's creation and nothing since)."""
    persisted = rmq.tap("app.events", "machine.note.persisted")
    note_id = create(rmq, author, text, ts=ts)
    (announced,) = outcomes(rmq, persisted, 1)
    assert announced["data"]["action"] == "created"
    return note_id, persisted


def note(db, note_id: str) -> tuple | None:
    rows = query(db, "SELECT author_id::text, machine_id, body, deleted_at IS NOT NULL FROM machine_notes "
                     "WHERE note_id = %s", (note_id,))
    return rows[0] if rows else None


def settle(rmq, db, author: str) -> dict:
    """Publish a marker note and wait for it: everything queued before it has been handled."""
    marker = publish(rmq, "machine.note.created", {"note_id": str(uuid.uuid4()), "machine_id": "marker",
                                                   "body": "marker"}, author, ts=3500)  # still in the past
    processed(db, marker)
    return marker


# ---- notes --------------------------------------------------------------------------------------

def test_a_note_sent_twice_lands_once_and_is_announced_once(machine_worker, rmq):
    db = machine_worker()
    persisted = rmq.tap("app.events", "machine.note.persisted")
    author, note_id, gym_id = user(), str(uuid.uuid4()), str(uuid.uuid4())
    # Given the app sends a note, and sends it again (same client_generated_id) after a lost answer
    sent = event("machine.note.created", user_id=author, timestamp=at(1), data={
        "note_id": note_id.upper(), "machine_id": "QR:leg-press.7", "body": "seat on 4, back pad 2",
        "gym_id": gym_id})
    publish(rmq, "machine.note.created", {}, author, body=sent)
    publish(rmq, "machine.note.created", {}, author, body=sent)
    marker = settle(rmq, db, author)
    # Then one row, one key, and one announcement (plus the marker's)
    assert query(db, "SELECT author_id::text, machine_id, gym_id::text, body, created_at FROM machine_notes "
                     "WHERE note_id = %s", (note_id,)) == [
        (author, "QR:leg-press.7", gym_id, "seat on 4, back pad 2", BASE + timedelta(seconds=1))]
    assert query(db, "SELECT count(*) FROM idempotency_keys WHERE client_generated_id = %s",
                 (sent["client_generated_id"],))[0][0] == 1
    announced = outcomes(rmq, persisted, 2)
    assert len(announced) == 2 and announced[1]["data"]["note_id"] == marker["data"]["note_id"]
    assert announced[0]["user_id"] == author
    assert announced[0]["data"] == {"note_id": note_id, "machine_id": "QR:leg-press.7", "author_id": author,
                                    "action": "created", "updated_at": at(1)}
    assert rmq.depth("machine.dead") == 0


def test_only_the_author_can_edit_or_delete_a_note(machine_worker, rmq):
    db = machine_worker()
    author, stranger = user(), user()
    note_id, persisted = created(rmq, author, "grip: wide", ts=1)
    # When someone else edits it, deletes it, or reuses its id for a note of their own
    edit = publish(rmq, "machine.note.updated", {"note_id": note_id, "body": "mine now"}, stranger, ts=5)
    delete = publish(rmq, "machine.note.deleted", {"note_id": note_id}, stranger, ts=6)
    squat = publish(rmq, "machine.note.created", {"note_id": note_id, "machine_id": "QR:x", "body": "hi"}, stranger, 7)
    # Then each is dead-lettered as forbidden and the note is untouched
    dead = dead_letters(rmq, "machine", 3)
    assert {dead[e["client_generated_id"]]["x-dead-reason"] for e in (edit, delete, squat)} == {"forbidden"}
    assert note(db, note_id) == (author, "QR:leg-press.7", "grip: wide", False)
    # while the author's own edit lands and is announced
    mine = publish(rmq, "machine.note.updated", {"note_id": note_id, "body": "grip: narrow"}, author, ts=8)
    processed(db, mine)
    assert note(db, note_id) == (author, "QR:leg-press.7", "grip: narrow", False)
    (announced,) = outcomes(rmq, persisted, 1)
    assert (announced["data"]["action"], announced["data"]["updated_at"]) == ("updated", at(8))


def test_an_older_edit_arriving_late_never_overwrites_a_newer_one(machine_worker, rmq):
    db = machine_worker()
    author = user()
    note_id, persisted = created(rmq, author, "v0")
    # Given the edit made at t=20 arrives before the edits made at t=10 and t=15
    newer = publish(rmq, "machine.note.updated", {"note_id": note_id, "body": "v20"}, author, ts=20)
    older = [publish(rmq, "machine.note.updated", {"note_id": note_id, "body": f"v{t}"}, author, ts=t)
             for t in (10, 15)]
    processed(db, newer, *older)
    # Then the newest text stands and only its change was announced
    assert note(db, note_id)[2] == "v20"
    assert query(db, "SELECT updated_at FROM machine_notes WHERE note_id = %s", (note_id,))[0][0] == \
        BASE + timedelta(seconds=20)
    settle(rmq, db, author)
    announced = [e["data"] for e in outcomes(rmq, persisted, 2) if e["data"]["note_id"] == note_id]
    assert [(d["action"], d["updated_at"]) for d in announced] == [("updated", at(20))]


def test_a_deleted_note_stays_deleted(machine_worker, rmq):
    db = machine_worker()
    author = user()
    note_id, persisted = created(rmq, author, "left cable sticks")
    # Given the note is deleted at t=10, deleted again, and edits made before and after arrive late
    first = publish(rmq, "machine.note.deleted", {"note_id": note_id}, author, ts=10)
    again = publish(rmq, "machine.note.deleted", {"note_id": note_id}, author, ts=11)
    late = publish(rmq, "machine.note.updated", {"note_id": note_id, "body": "fixed now"}, author, ts=5)
    later = publish(rmq, "machine.note.updated", {"note_id": note_id, "body": "back?"}, author, ts=30)
    processed(db, first, again, late, later)
    # Then it is deleted with its text erased, announced once, and nothing is dead-lettered
    assert note(db, note_id) == (author, "QR:leg-press.7", None, True)
    settle(rmq, db, author)
    announced = [e["data"] for e in outcomes(rmq, persisted, 2) if e["data"]["note_id"] == note_id]
    assert [(d["action"], d["updated_at"]) for d in announced] == [("deleted", at(10))]
    assert rmq.depth("machine.dead") == 0


def test_bad_input_is_dead_lettered_with_its_reason_and_the_next_event_lands(machine_worker, rmq):
    db = machine_worker()
    author = user()
    # Put straight on the worker's queue as well as through the exchange: the worker trusts no wire
    bad_machine = event("machine.note.created", user_id=author, data={
        "note_id": str(uuid.uuid4()), "machine_id": "leg press #7", "body": "x"})
    rmq.publish("", "machine", dumps(bad_machine), message_id=bad_machine["client_generated_id"])
    blank = publish(rmq, "machine.note.created", {"note_id": str(uuid.uuid4()), "machine_id": "QR:1",
                                                  "body": " \n\t "}, author)
    unknown = publish(rmq, "machine.note.updated", {"note_id": str(uuid.uuid4()), "body": "hello"}, author)
    torn = publish(rmq, "equipment.prefs.updated", {"prefs": {"preferred_machine_ids": ["QR:1", "QR:2"],
                                                              "avoided_machine_ids": ["QR:2"]}}, author)
    too_high = publish(rmq, "equipment.prefs.updated", {"prefs": {"seat_settings": {"QR:1": {"seat_height": 21}}}},
                       author)
    good = create(rmq, author, "fine")
    wait_for(lambda: note(db, good) is not None, message="the good note lands")
    dead = dead_letters(rmq, "machine", 5)
    reasons = {k: (h["x-dead-reason"], h.get("x-dead-field")) for k, h in dead.items()}
    assert reasons == {
        bad_machine["client_generated_id"]: ("invalid", "data.machine_id"),
        blank["client_generated_id"]: ("invalid", "data.body"),
        unknown["client_generated_id"]: ("not_found", None),
        torn["client_generated_id"]: ("invalid", "data.prefs.avoided_machine_ids"),
        too_high["client_generated_id"]: ("invalid", "data.prefs.seat_settings.QR:1.seat_height"),
    }
    assert query(db, "SELECT count(*) FROM machine_notes")[0][0] == 1
    assert query(db, "SELECT count(*) FROM equipment_prefs")[0][0] == 0


# ---- equipment preferences ------------------------------------------------------------------

PREFS = [{"weight_unit": "kg", "preferred_machine_ids": [f"QR:{i}"],
          "seat_settings": {f"QR:{i}": {"seat_height": i % 21, "back_angle": 45, "notes": "pin at the top"}}}
         for i in range(8)]


def test_newest_prefs_win_when_published_newest_first(machine_worker, rmq):
    db = machine_worker()
    persisted = rmq.tap("app.events", "equipment.prefs.persisted")
    lifter = user()
    # Given the prefs events of one user arrive in reverse order of their timestamps
    sent = [publish(rmq, "equipment.prefs.updated", {"prefs": PREFS[i]}, lifter, ts=i) for i in reversed(range(8))]
    processed(db, *sent)
    # Then the newest stands, replacing whole, and only it was announced
    assert query(db, "SELECT prefs, updated_at FROM equipment_prefs WHERE user_id = %s", (lifter,)) == [
        (PREFS[7], BASE + timedelta(seconds=7))]
    settle(rmq, db, lifter)
    (announced,) = outcomes(rmq, persisted, 1)
    assert announced["user_id"] == lifter and announced["data"] == {"user_id": lifter, "version": at(7)}
    # and a newer, emptier event replaces them whole
    cleared = publish(rmq, "equipment.prefs.updated", {"prefs": {"weight_unit": "lb"}}, lifter, ts=60)
    processed(db, cleared)
    assert query(db, "SELECT prefs FROM equipment_prefs WHERE user_id = %s", (lifter,)) == [({"weight_unit": "lb"},)]


def test_prefs_converge_on_the_newest_across_two_replicas(machine_worker, rmq):
    db = machine_worker(replicas=2, PREFETCH=4)
    lifters = [user() for _ in range(3)]
    sent = [event("equipment.prefs.updated", user_id=u, timestamp=at(i), data={"prefs": PREFS[i % 8]})
            for u in lifters for i in range(20)]
    random.Random(5).shuffle(sent)
    for e in sent:
        publish(rmq, e["event_type"], {}, e["user_id"], body=e)
    processed(db, *sent)
    assert sorted(query(db, "SELECT user_id::text, prefs, updated_at FROM equipment_prefs")) == sorted(
        (u, PREFS[19 % 8], BASE + timedelta(seconds=19)) for u in lifters)


# ---- reads through the ingress --------------------------------------------------------------

def test_the_app_reads_back_only_the_callers_notes_and_prefs(machine_worker, start_ingress, bearer, rmq):
    db = machine_worker()
    port = start_ingress()
    me, other = user(), user()
    machine = "QR:leg-press.7"

    def post(who, event_type, data, ts):
        status, body, _ = call(port, "POST", EVENTS, bearer(who), event(event_type, data=data, user_id=who,
                                                                         timestamp=at(ts)))
        assert status == 202, body
        return body["accepted"][0]

    def page(who, machine_id=machine, **params):
        qs = "&".join(f"{k}={v}" for k, v in params.items())
        return call(port, "GET", f"/api/v1/machines/{machine_id}/notes?{qs}", bearer(who))

    # Given three notes of mine on the machine, one since deleted, one on another machine, and one of someone else
    mine = [str(uuid.uuid4()) for _ in range(4)]
    for i, note_id in enumerate(mine[:3]):
        post(me, "machine.note.created", {"note_id": note_id, "machine_id": machine, "body": f"note {i}"}, ts=i)
    post(me, "machine.note.created", {"note_id": mine[3], "machine_id": "QR:other", "body": "elsewhere"}, ts=4)
    post(me, "machine.note.deleted", {"note_id": mine[1]}, ts=5)
    theirs = str(uuid.uuid4())
    post(other, "machine.note.created", {"note_id": theirs, "machine_id": machine, "body": "private"}, ts=6)
    wait_for(lambda: query(db, "SELECT count(*) FROM idempotency_keys")[0][0] == 6, message="all processed")
    # When I read the machine's notes a page of one at a time
    status, first, _ = page(me, limit=1)
    assert status == 200, first
    status, second, _ = page(me, limit=1, cursor=first["next_cursor"])
    assert status == 200, second
    # Then I see my live notes on it, newest first, and nothing else
    assert [n["body"] for n in first["notes"] + second["notes"]] == ["note 2", "note 0"]
    assert second["next_cursor"] is None
    assert first["notes"][0] == {"note_id": mine[2], "machine_id": machine, "gym_id": None, "body": "note 2",
                                 "created_at": at(2), "updated_at": at(2)}
    # and the other user sees only their own note
    status, body, _ = page(other, limit=50)
    assert (status, [n["note_id"] for n in body["notes"]]) == (200, [theirs])
    # A machine code the route does not accept, a cursor this API never gave out, no token
    assert page(me, machine_id="leg%20press", limit=5)[0] == 404
    status, body, _ = page(me, limit=5, cursor="bm90LWEtY3Vyc29y")
    assert (status, body["error"]) == (400, "invalid")
    # a forged cursor in the API's own form, with a zone that pushes the date past year 9999
    forged = base64.urlsafe_b64encode(f"9999-12-31T23:59:59-23:59|{uuid.uuid4()}".encode()).decode().rstrip("=")
    status, body, _ = page(me, limit=5, cursor=forged)
    assert (status, body["error"], body.get("field")) == (400, "invalid", "cursor")
    assert call(port, "GET", f"/api/v1/machines/{machine}/notes")[0] == 401
    # and a client cannot forge the worker's outcome event
    forged = event("machine.note.persisted", user_id=me, data={"note_id": mine[0], "machine_id": machine,
                                                                "author_id": me, "action": "deleted",
                                                                "updated_at": at(9)})
    status, body, _ = call(port, "POST", EVENTS, bearer(me), forged)
    assert (status, body["error"]) == (422, "event_type_not_allowed")

    # Equipment prefs: empty until set, then the caller's own, never another user's
    assert call(port, "GET", "/api/v1/equipment-prefs", bearer(me))[:2] == (200, {"prefs": {}, "version": None})
    post(me, "equipment.prefs.updated", {"prefs": PREFS[3]}, ts=7)
    wait_for(lambda: query(db, "SELECT count(*) FROM equipment_prefs")[0][0] == 1, message="prefs stored")
    assert call(port, "GET", "/api/v1/equipment-prefs", bearer(me))[:2] == (
        200, {"prefs": PREFS[3], "version": at(7)})
    assert call(port, "GET", "/api/v1/equipment-prefs", bearer(other))[:2] == (200, {"prefs": {}, "version": None})
    # and prefs on someone else's behalf are refused at the door
    forged = event("equipment.prefs.updated", user_id=other, data={"prefs": {}})
    assert call(port, "POST", EVENTS, bearer(me), forged)[0] == 403


# ---- migrations -------------------------------------------------------------------------------

def test_migration_rolls_back_and_applies_again(make_database):
    db = make_database("machine")
    assert migrate.rollback("machine", db) == 1
    assert query(db, "SELECT count(*) FROM pg_tables WHERE tablename IN ('machine_notes', 'equipment_prefs')") == [(0,)]
    assert migrate.apply("machine", db) == 1
    assert query(db, "SELECT count(*) FROM pg_tables WHERE tablename IN ('machine_notes', 'equipment_prefs')") == [(2,)]
