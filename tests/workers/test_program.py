"""Program worker on the real broker and database, read through the real ingress: plans that only
their owner changes or reads, changes of one plan from two replicas that lose nothing, and
workout sessions summarized once."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from workers.ops import migrate
from tests.support.db import processed, query
from tests.support.events import dumps, event
from tests.support.http import call
from tests.support.rabbit import wait_for
from tests.support.bus import dead_letters, outcomes, publish
from tests.support.processes import answering_queries

EVENTS = "/api/v1/notify/events"
SQUAT = {"name": "Back squat", "sets": 5, "reps": 5, "weight": {"value": 100, "unit": "kg"}}
PUSHUP = {"name": "Push-up", "sets": 3, "reps": 20}


# ---- helpers ----------------------------------------------------------------------------------

@pytest.fixture
def program_worker(start_worker, make_database):
    """start() → (database, process) of a running program worker."""
    def start(wait: bool = True, **env):
        db = make_database("program")
        proc = start_worker("program", PROGRAM_DATABASE_URL=db, **env)
        if wait:
            wait_for(lambda: consuming(proc), message="program worker consuming")
        return db, proc
    return start


@pytest.fixture
def reader(program_worker, start_ingress, bearer):
    """(database, get(user, path) → (status, body)) with a worker answering queries and an ingress."""
    db, proc = program_worker(wait=False)
    port = start_ingress()  # both start at once: it saves a few seconds a test
    wait_for(lambda: consuming(proc) and answering_queries(proc), message="program worker consuming and answering")

    def get(user: str, path: str):
        status, body, _ = call(port, "GET", path, bearer(user))
        return status, body
    get.port = port
    return db, get


def consuming(proc) -> bool:
    return any(line.get("msg") == "consuming" for line in proc.logs())


def new_id() -> str:
    return str(uuid.uuid4())


def at(seconds: float) -> str:
    """An envelope timestamp `seconds` after a minute ago (well inside the allowed clock skew)."""
    ts = datetime.now(timezone.utc) - timedelta(minutes=1) + timedelta(seconds=seconds)
    return ts.isoformat().replace("+00:00", "Z")


def plan(program_id: str, *workout_ids: str, name: str = "Strength 5x5") -> dict:
    return {"program_id": program_id, "name": name, "description": "Three days a week",
            "workouts": [{"workout_id": w, "name": f"Day {i}", "day_of_week": i, "exercises": [SQUAT, PUSHUP]}
                         for i, w in enumerate(workout_ids, 1)]}


def revision(db, program_id: str) -> int:
    return query(db, "SELECT revision FROM programs WHERE program_id = %s", (program_id,))[0][0]


# ---- plans ------------------------------------------------------------------------------------

def test_a_created_program_lands_with_its_workouts_and_reads_back_through_the_ingress(reader, rmq, bearer):
    db, get = reader
    persisted = rmq.tap("app.events", "program.persisted")
    owner, program_id, monday, wednesday = new_id(), new_id(), new_id(), new_id()
    # When the app sends a new program with two workouts through the ingress (ids in upper case)
    created = event("program.created", data=plan(program_id.upper(), monday.upper(), wednesday), user_id=owner)
    status, body, _ = call(get.port, "POST", EVENTS, bearer(owner), created)
    assert status == 202, body
    # Then the program, its workouts in order and revision 1 are stored, and announced
    (announced,) = outcomes(rmq, persisted)
    assert announced["user_id"] == owner
    assert announced["data"] == {"program_id": program_id, "owner_id": owner, "revision": 1, "deleted": False}
    assert query(db, "SELECT owner_id::text, name, description, revision FROM programs") == [
        (owner, "Strength 5x5", "Three days a week", 1)]
    assert query(db, "SELECT workout_id::text, position, day_of_week FROM workouts ORDER BY position") == [
        (monday, 1, 1), (wednesday, 2, 2)]
    # And the owner reads it back with its workouts and exercises
    status, program = get(owner, f"/api/v1/programs/{program_id}")
    assert status == 200, program
    assert (program["program_id"], program["name"], program["revision"]) == (program_id, "Strength 5x5", 1)
    assert [(w["workout_id"], w["position"], w["exercises"]) for w in program["workouts"]] == [
        (monday, 1, [SQUAT, PUSHUP]), (wednesday, 2, [SQUAT, PUSHUP])]
    # And the list pages newest first
    newer = publish(rmq, "program.created", {"program_id": new_id(), "name": "Mobility"}, owner)
    processed(db, newer)
    status, first = get(owner, "/api/v1/programs?limit=1")
    assert status == 200 and [p["name"] for p in first["programs"]] == ["Mobility"]
    assert first["programs"][0]["workouts"] == []
    status, second = get(owner, f"/api/v1/programs?limit=1&cursor={first['next_cursor']}")
    assert [p["name"] for p in second["programs"]] == ["Strength 5x5"] and second["next_cursor"] is None
    assert len(second["programs"][0]["workouts"]) == 2


def test_the_same_event_twice_changes_the_plan_once(program_worker, rmq):
    db, _ = program_worker()
    persisted = rmq.tap("app.events", "program.persisted")
    owner, program_id, workout_id = new_id(), new_id(), new_id()
    created = event("program.created", data=plan(program_id), user_id=owner)
    added = event("workout.added", data={"program_id": program_id, "workout_id": workout_id, "name": "Legs",
                                         "exercises": [SQUAT]}, user_id=owner)
    # When each is delivered twice (a client retry, a redelivery)
    for body in (created, created, added, added):
        rmq.publish("app.events", body["event_type"], dumps(body), message_id=body["client_generated_id"])
    # and then one more change, which lands after them
    last = publish(rmq, "program.updated", {"program_id": program_id, "name": "Strength"}, owner)
    processed(db, created, added, last)
    # Then one program, one workout, one revision per change, one outcome event per change
    assert query(db, "SELECT count(*) FROM programs") == [(1,)]
    assert query(db, "SELECT workout_id::text, position FROM workouts") == [(workout_id, 1)]
    assert revision(db, program_id) == 3
    assert sorted(e["data"]["revision"] for e in outcomes(rmq, persisted, 3)) == [1, 2, 3]
    assert rmq.depth(persisted) == 0 and rmq.depth("program.dead") == 0


def test_bad_input_is_dead_lettered_with_its_reason_and_the_next_event_lands(program_worker, rmq):
    db, _ = program_worker()
    owner, program_id = new_id(), new_id()
    too_many_reps = plan(new_id(), new_id())
    too_many_reps["workouts"][0]["exercises"][0] = {**SQUAT, "reps": 101}
    twice = new_id()
    sent = {
        "data.name": publish(rmq, "program.created", {"program_id": new_id(), "name": "x" * 121}, owner),
        "data.workouts.0.exercises.0.reps": publish(rmq, "program.created", too_many_reps, owner),
        "data": publish(rmq, "program.updated", {"program_id": program_id}, owner),  # names no field
        "data.workouts": publish(rmq, "program.created", plan(new_id(), twice, twice), owner),
    }
    good = publish(rmq, "program.created", plan(program_id, new_id()), owner)
    # Then each bad one is dead-lettered as invalid naming its field, and the good one lands
    dead = dead_letters(rmq, "program", len(sent))
    for field, body in sent.items():
        headers = dead[body["client_generated_id"]]
        assert (headers["x-dead-reason"], headers.get("x-dead-field")) == ("invalid", field), headers
    processed(db, good)
    assert query(db, "SELECT program_id::text FROM programs") == [(program_id,)]
    assert query(db, "SELECT count(*) FROM workouts") == [(1,)]


def test_someone_elses_program_and_session_cannot_be_changed_or_read(reader, rmq):
    db, get = reader
    owner, stranger, program_id, workout_id = new_id(), new_id(), new_id(), new_id()
    session_id, set_id, strangers_session = new_id(), new_id(), new_id()
    one_set = {"session_id": session_id, "set_id": set_id, "exercise": "Back squat", "reps": 5,
               "weight": {"value": 100, "unit": "kg"}}
    processed(db, publish(rmq, "program.created", plan(program_id, workout_id), owner),
              publish(rmq, "workout_session.started", {"session_id": session_id, "program_id": program_id}, owner),
              publish(rmq, "workout_session.set_logged", one_set, owner),
              publish(rmq, "workout_session.started", {"session_id": strangers_session}, stranger))
    # When a stranger tries every change of the owner's things, and to take over the owner's ids
    attempts = [
        publish(rmq, "program.updated", {"program_id": program_id, "name": "Mine now"}, stranger),
        publish(rmq, "program.deleted", {"program_id": program_id}, stranger),
        publish(rmq, "workout.added", {"program_id": program_id, "workout_id": new_id(), "name": "X",
                                       "exercises": []}, stranger),
        publish(rmq, "workout.updated", {"program_id": program_id, "workout_id": workout_id, "name": "X"}, stranger),
        publish(rmq, "workout.removed", {"program_id": program_id, "workout_id": workout_id}, stranger),
        publish(rmq, "program.created", plan(program_id), stranger),
        publish(rmq, "program.created", plan(new_id(), workout_id), stranger),
        publish(rmq, "workout_session.started", {"session_id": new_id(), "workout_id": workout_id}, stranger),
        publish(rmq, "workout_session.started", {"session_id": session_id}, stranger),
        publish(rmq, "workout_session.set_logged", {**one_set, "set_id": new_id()}, stranger),
        publish(rmq, "workout_session.set_logged", {**one_set, "session_id": strangers_session}, stranger),
        publish(rmq, "workout_session.completed", {"session_id": session_id}, stranger),
    ]
    # Then every one is refused as forbidden
    dead = dead_letters(rmq, "program", len(attempts))
    assert {k: h["x-dead-reason"] for k, h in dead.items()} == {a["client_generated_id"]: "forbidden"
                                                               for a in attempts}
    # and nothing of the owner's changed
    assert query(db, "SELECT owner_id::text, name, revision, deleted_at FROM programs") == [
        (owner, "Strength 5x5", 1, None)]
    assert query(db, "SELECT workout_id::text, name, removed_at FROM workouts") == [(workout_id, "Day 1", None)]
    assert query(db, "SELECT set_id::text, session_id::text FROM workout_sets") == [(set_id, session_id)]
    assert query(db, "SELECT completed_at FROM workout_sessions WHERE session_id = %s", (session_id,)) == [(None,)]
    # And the stranger can read neither; the owner can; an unknown program is not found
    assert get(stranger, f"/api/v1/programs/{program_id}")[0] == 403
    assert get(stranger, f"/api/v1/workout-sessions/{session_id}")[0] == 403
    assert get(stranger, "/api/v1/programs")[1]["programs"] == []
    assert get(owner, f"/api/v1/programs/{program_id}")[0] == 200
    assert get(owner, f"/api/v1/workout-sessions/{session_id}")[0] == 200
    assert get(owner, f"/api/v1/programs/{new_id()}")[0] == 404


def test_patches_merge_per_field_newest_wins_and_a_deleted_program_is_gone(reader, rmq):
    db, get = reader
    persisted = rmq.tap("app.events", "program.persisted")
    owner, program_id, legs, arms = new_id(), new_id(), new_id(), new_id()
    processed(db, publish(rmq, "program.created", plan(program_id, legs, arms), owner, timestamp=at(0)))
    # When a newer rename lands before an older one, and workouts are changed and removed
    newer = publish(rmq, "program.updated", {"program_id": program_id, "name": "Newer"}, owner, timestamp=at(20))
    processed(db, newer)
    older = publish(rmq, "program.updated", {"program_id": program_id, "name": "Older", "description": None},
                    owner, timestamp=at(10))
    changes = [publish(rmq, "workout.updated", {"program_id": program_id, "workout_id": legs, "day_of_week": None,
                                                "exercises": [PUSHUP]}, owner, timestamp=at(30)),
               publish(rmq, "workout.removed", {"program_id": program_id, "workout_id": arms}, owner, timestamp=at(31)),
               publish(rmq, "workout.removed", {"program_id": program_id, "workout_id": arms}, owner, timestamp=at(32))]
    processed(db, older, *changes)
    # Then the newer name stands, the older patch's other field landed, one revision per accepted change
    status, program = get(owner, f"/api/v1/programs/{program_id}")
    assert status == 200, program
    assert (program["name"], program["description"], program["revision"]) == ("Newer", None, 5)
    assert [(w["workout_id"], w["day_of_week"], w["exercises"]) for w in program["workouts"]] == [
        (legs, None, [PUSHUP])]
    # When the owner deletes it, twice
    deleted = [publish(rmq, "program.deleted", {"program_id": program_id}, owner) for _ in range(2)]
    processed(db, *deleted)
    events = outcomes(rmq, persisted, 6)
    assert [(e["data"]["revision"], e["data"]["deleted"]) for e in events] == [
        (1, False), (2, False), (3, False), (4, False), (5, False), (6, True)]
    # Then it is gone from reads, and a later change is refused as not found
    assert get(owner, f"/api/v1/programs/{program_id}")[0] == 404
    assert get(owner, "/api/v1/programs")[1]["programs"] == []
    late = publish(rmq, "workout.added", {"program_id": program_id, "workout_id": new_id(), "name": "Late",
                                          "exercises": []}, owner)
    assert dead_letters(rmq, "program", 1)[late["client_generated_id"]]["x-dead-reason"] == "not_found"
    assert revision(db, program_id) == 6


def test_two_replicas_changing_one_plan_lose_nothing(program_worker, start_worker, rmq):
    db, first = program_worker(PREFETCH=4)
    second = start_worker("program", PROGRAM_DATABASE_URL=db, PREFETCH=4)
    wait_for(lambda: consuming(second), message="second replica consuming")
    persisted = rmq.tap("app.events", "program.persisted")
    owner, program_id, legs, arms = new_id(), new_id(), new_id(), new_id()
    processed(db, publish(rmq, "program.created", plan(program_id, legs, arms), owner))
    # When 60 workouts are added to the plan at once, with patches of four different fields among them
    patches = {
        15: ("program.updated", {"program_id": program_id, "name": "Renamed"}),
        30: ("program.updated", {"program_id": program_id, "description": "Described"}),
        45: ("workout.updated", {"program_id": program_id, "workout_id": legs, "day_of_week": 6}),
        55: ("workout.updated", {"program_id": program_id, "workout_id": arms, "exercises": [PUSHUP]}),
    }
    added, sent = [new_id() for _ in range(60)], []
    for i, workout_id in enumerate(added):
        sent.append(publish(rmq, "workout.added", {"program_id": program_id, "workout_id": workout_id,
                                                   "name": f"Workout {i}", "exercises": [SQUAT]}, owner))
        if i in patches:
            sent.append(publish(rmq, *patches[i], owner))
    processed(db, *sent, timeout=40)
    # Then every workout is there with a place of its own
    positions = dict(query(db, "SELECT workout_id::text, position FROM workouts"))
    assert set(positions) == {legs, arms, *added}
    assert sorted(positions.values()) == list(range(1, 63))
    # and the revision counts every change: creation, 60 additions, 4 patches
    assert revision(db, program_id) == 1 + 60 + len(patches)
    revisions = [e["data"]["revision"] for e in outcomes(rmq, persisted, 65)]
    assert sorted(revisions) == list(range(1, 66))
    # and every patched field survived
    assert query(db, "SELECT name, description FROM programs") == [("Renamed", "Described")]
    assert query(db, "SELECT day_of_week, exercises FROM workouts WHERE workout_id = %s", (legs,)) == [
        (6, [SQUAT, PUSHUP])]
    assert query(db, "SELECT exercises FROM workouts WHERE workout_id = %s", (arms,)) == [([PUSHUP],)]
    # with both replicas at work and nothing dead-lettered
    for proc in (first, second):
        assert any(l.get("msg") == "event processed" and l.get("event_type") == "workout.added" for l in proc.logs())
    assert rmq.depth("program.dead") == 0


def test_a_change_that_overtakes_its_creation_is_retried_until_it_lands(program_worker, rmq):
    db, proc = program_worker()
    owner, program_id, workout_id, session_id = new_id(), new_id(), new_id(), new_id()
    # When a workout and a set arrive before the program and session they belong to
    early = [publish(rmq, "workout.added", {"program_id": program_id, "workout_id": workout_id, "name": "Legs",
                                            "exercises": [SQUAT]}, owner),
             publish(rmq, "workout_session.set_logged", {"session_id": session_id, "set_id": new_id(),
                                                         "exercise": "Squat", "reps": 5,
                                                         "weight": {"value": 60, "unit": "kg"}}, owner)]
    # they are held back for a retry, not dead-lettered as unknown
    retried = lambda: {l.get("client_generated_id") for l in proc.logs() if l.get("msg") == "event retried"}
    wait_for(lambda: retried() >= {e["client_generated_id"] for e in early}, message="early events retried")
    processed(db, publish(rmq, "program.created", {"program_id": program_id, "name": "Late start"}, owner),
              publish(rmq, "workout_session.started", {"session_id": session_id}, owner))
    # Then they land once their parents exist, nothing lost or dead-lettered
    processed(db, *early)
    assert query(db, "SELECT workout_id::text, position FROM workouts") == [(workout_id, 1)]
    assert revision(db, program_id) == 2
    assert query(db, "SELECT count(*) FROM workout_sets") == [(1,)]
    assert rmq.depth("program.dead") == 0


# ---- sessions ---------------------------------------------------------------------------------

def test_a_session_logs_sets_and_is_summarized_once(reader, rmq):
    db, get = reader
    summaries = rmq.tap("app.events", "workout_session.summarized")
    owner, program_id, workout_id, session_id = new_id(), new_id(), new_id(), new_id()
    processed(db, publish(rmq, "program.created", plan(program_id, workout_id), owner))
    started = publish(rmq, "workout_session.started", {"session_id": session_id, "workout_id": workout_id}, owner,
                      timestamp=at(0))
    logged = [({"exercise": "Back squat", "reps": 5, "weight": {"value": 100, "unit": "kg"}}, at(30)),
              ({"exercise": "Bench press", "reps": 8, "weight": {"value": 135, "unit": "lb"}}, at(20)),
              ({"exercise": "Push-up", "reps": 20, "weight": {"value": 0, "unit": "kg"}}, at(40))]
    set_ids = [new_id() for _ in logged]
    sets = [publish(rmq, "workout_session.set_logged", {"session_id": session_id, "set_id": set_id, **data}, owner,
                    timestamp=ts) for set_id, (data, ts) in zip(set_ids, logged)]
    processed(db, started, *sets)
    # When it is completed twice
    done = [publish(rmq, "workout_session.completed", {"session_id": session_id}, owner, timestamp=at(50 + i))
            for i in range(2)]
    processed(db, *done)
    # Then one summary: three sets, the volume in kg whatever unit each was logged in
    (summary,) = outcomes(rmq, summaries)
    volume = round(5 * 100 + 8 * 135 * 0.45359237, 2)
    assert summary["user_id"] == owner
    assert summary["data"] == {"session_id": session_id, "owner_id": owner, "sets": 3,
                               "total_volume": {"value": volume, "unit": "kg"},
                               "started_at": started["timestamp"], "completed_at": done[0]["timestamp"]}
    # And a set logged after completion is refused with a reason the app can show
    late = publish(rmq, "workout_session.set_logged", {"session_id": session_id, "set_id": new_id(),
                                                       **logged[0][0]}, owner)
    headers = dead_letters(rmq, "program", 1)[late["client_generated_id"]]
    assert headers["x-dead-reason"] == "session_completed" and "start a new session" in headers["x-dead-detail"]
    assert rmq.depth(summaries) == 0
    # And the owner reads the session: its program, the sets in the order they were logged, the totals
    status, session = get(owner, f"/api/v1/workout-sessions/{session_id}")
    assert status == 200, session
    assert (session["program_id"], session["workout_id"], session["status"]) == (program_id, workout_id, "completed")
    assert [s["set_id"] for s in session["sets"]] == [set_ids[1], set_ids[0], set_ids[2]]
    assert session["sets"][0]["weight"] == {"value": 135.0, "unit": "lb"}
    assert session["totals"] == {"sets": 3, "reps": 33, "volume": {"value": volume, "unit": "kg"}}


# ---- migrations -------------------------------------------------------------------------------

def test_the_migration_rolls_back_and_applies_again(make_database):
    db = make_database("program")
    tables = "SELECT count(*) FROM pg_tables WHERE tablename IN ('programs', 'workouts', 'workout_sessions', " \
             "'workout_sets')"
    assert query(db, tables) == [(4,)]
    assert migrate.rollback("program", db) == 1
    assert query(db, tables) == [(0,)]
    assert migrate.apply("program", db) == 1
    assert query(db, tables) == [(4,)]
