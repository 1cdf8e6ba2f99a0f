"""Program worker: training plans (programs and their workouts) and the workout sessions users log.

Every change of a plan locks the program's row (SELECT … FOR UPDATE) before it reads or writes,
then bumps its revision: replicas applying changes to one plan take turns, so none is lost,
workout positions never collide and the revision counts every accepted change. Patches merge
per field, the newest event (by envelope timestamp) winning, so the order in which replicas see
them does not matter. An event about a program, workout or session this worker has not seen
yet is retried (NotYet): its creation may still be on its way through another replica.
"""
from __future__ import annotations

from typing import NoReturn

import orjson

from shared.envelope import Envelope, canonical_id, rfc3339
from shared.errors import Forbidden, InvalidEvent, NotFound, NotYet, PermanentError
from workers.runtime.handler import Context, WorkerSpec
from workers.program import reads as program_reads
from workers.program.sql import (BUMP_REVISION, COMPLETE_SESSION, DELETE_PROGRAM, INSERT_PROGRAM,
                                 INSERT_SESSION, INSERT_SET, INSERT_WORKOUTS, LOCK_PROGRAM, LOCK_SESSION,
                                 PATCH_PROGRAM, PATCH_WORKOUT, PATCHABLE_PROGRAM, PATCHABLE_WORKOUT,
                                 PROGRAM_OWNER, PROGRAM_STATE, REMOVE_WORKOUT, SESSION_OWNER, SET_OWNER,
                                 TOTALS, WORKOUT, WORKOUT_SLOTS, WORKOUT_STATE)

MAX_WORKOUTS = 100           # live workouts per program
MAX_SETS_PER_SESSION = 500   # keeps a session's read one bounded answer
JSON_COLUMNS = {"exercises"}



# ---- plans ----------------------------------------------------------------------------------

def create_program(ctx: Context, event: Envelope) -> None:
    data = event.data
    program_id = canonical_id(data["program_id"])
    workouts = data.get("workouts", [])
    cur = ctx.cursor
    cur.execute(INSERT_PROGRAM, {"program_id": program_id, "owner": event.user_id, "name": data["name"],
                                 "description": data.get("description"), "created_at": event.timestamp})
    if cur.fetchone() is None:
        _refuse_taken(cur, PROGRAM_OWNER, "program", program_id, event.user_id,
                      "change it with program.updated or choose a new program_id")
    _add_workouts(cur, event, program_id, workouts, first_position=1)
    _persisted(ctx, event, program_id, revision=1)


def update_program(ctx: Context, event: Envelope) -> None:
    program_id = canonical_id(event.data["program_id"])
    cur = ctx.cursor
    versions, _ = _lock_program(cur, program_id, event.user_id)
    patch = _newer_fields(event, versions, PATCHABLE_PROGRAM)
    if not patch:
        return  # newer patches set every field this one names: they stand
    cur.execute(PATCH_PROGRAM.format(columns=_assignments(patch)),
                {**patch, "program_id": program_id, "versions": _versions(event, patch)})
    _persisted(ctx, event, program_id, cur.fetchone()[0])


def delete_program(ctx: Context, event: Envelope) -> None:
    program_id = canonical_id(event.data["program_id"])
    cur = ctx.cursor
    _, deleted = _lock_program(cur, program_id, event.user_id, deleted_ok=True)
    if deleted:
        return  # deleted before
    cur.execute(DELETE_PROGRAM, (program_id,))
    _persisted(ctx, event, program_id, cur.fetchone()[0], deleted=True)


def add_workout(ctx: Context, event: Envelope) -> None:
    program_id = canonical_id(event.data["program_id"])
    cur = ctx.cursor
    _lock_program(cur, program_id, event.user_id)
    cur.execute(WORKOUT_SLOTS, (program_id,))
    live, last_position = cur.fetchone()
    if live >= MAX_WORKOUTS:
        raise PermanentError(f"program {program_id} already has {MAX_WORKOUTS} workouts; remove one first",
                             reason="too_many_workouts")
    _add_workouts(cur, event, program_id, [event.data], first_position=last_position + 1)
    _bump(ctx, cur, event, program_id)


def update_workout(ctx: Context, event: Envelope) -> None:
    program_id, workout_id = canonical_id(event.data["program_id"]), canonical_id(event.data["workout_id"])
    cur = ctx.cursor
    _lock_program(cur, program_id, event.user_id)
    versions, removed = _workout(cur, program_id, workout_id, event.user_id)
    if removed:
        raise NotFound(f"workout {workout_id} was removed from program {program_id}")
    patch = _newer_fields(event, versions, PATCHABLE_WORKOUT)
    if not patch:
        return
    values = {k: orjson.dumps(v).decode() if k in JSON_COLUMNS else v for k, v in patch.items()}
    cur.execute(PATCH_WORKOUT.format(columns=_assignments(patch)),
                {**values, "workout_id": workout_id, "versions": _versions(event, patch)})
    _bump(ctx, cur, event, program_id)


def remove_workout(ctx: Context, event: Envelope) -> None:
    program_id, workout_id = canonical_id(event.data["program_id"]), canonical_id(event.data["workout_id"])
    cur = ctx.cursor
    _lock_program(cur, program_id, event.user_id)
    _, removed = _workout(cur, program_id, workout_id, event.user_id)
    if removed:
        return  # removed before
    cur.execute(REMOVE_WORKOUT, (workout_id,))
    _bump(ctx, cur, event, program_id)


def _lock_program(cur, program_id: str, user_id: str, deleted_ok: bool = False) -> tuple[dict, bool]:
    """(field versions, deleted) of the caller's program, row-locked until commit."""
    cur.execute(LOCK_PROGRAM, (program_id,))
    row = cur.fetchone()
    if row is None:
        raise NotYet(f"program {program_id} is not known yet (its program.created may still be on its way)")
    owner, versions, deleted = row
    if owner != user_id:
        raise Forbidden(f"program {program_id} belongs to another user")
    if deleted and not deleted_ok:
        raise NotFound(f"program {program_id} was deleted")
    return versions, deleted


def _workout(cur, program_id: str, workout_id: str, user_id: str) -> tuple[dict, bool]:
    """(field versions, removed) of a workout of this program; its program's lock covers it."""
    cur.execute(WORKOUT, (workout_id,))
    row = cur.fetchone()
    if row is None:
        raise NotYet(f"workout {workout_id} is not known yet (its workout.added may still be on its way)")
    in_program, owner, versions, removed = row
    if owner != user_id:
        raise Forbidden(f"workout {workout_id} belongs to another user")
    if in_program != program_id:
        raise InvalidEvent(f"workout {workout_id} is in another program", field="data.workout_id")
    return versions, removed


def _add_workouts(cur, event: Envelope, program_id: str, workouts: list[dict], first_position: int) -> None:
    rows = [(canonical_id(w["workout_id"]), program_id, w["name"], w.get("day_of_week"), w["exercises"],
             first_position + i) for i, w in enumerate(workouts)]
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        raise InvalidEvent("a workout_id appears twice", field="data.workouts")
    if not rows:
        return
    cur.execute(INSERT_WORKOUTS, (orjson.dumps(rows).decode(),))
    inserted = {r[0] for r in cur.fetchall()}
    for workout_id in ids:
        if workout_id not in inserted:
            _refuse_taken(cur, WORKOUT, "workout", workout_id, event.user_id, "choose a new workout_id", owner_at=1)


def _refuse_taken(cur, owner_sql: str, kind: str, resource_id: str, user_id: str, advice: str,
                  owner_at: int = 0) -> NoReturn:
    """An id that exists already: someone else's is forbidden, the caller's own is no new one."""
    cur.execute(owner_sql, (resource_id,))
    if cur.fetchone()[owner_at] != user_id:
        raise Forbidden(f"{kind} {resource_id} belongs to another user")
    raise PermanentError(f"{kind} {resource_id} exists already: {advice}", reason="already_exists")


def _newer_fields(event: Envelope, versions: dict, patchable: tuple[str, ...]) -> dict:
    """The patch's fields no newer event has set: per field, the newest event wins."""
    return {f: event.data[f] for f in patchable if f in event.data and versions.get(f, "") < event.version_key}


def _assignments(patch: dict) -> str:
    # column names come from the PATCHABLE_* tuples (the schemas allow no others)
    return ", ".join(f"{c} = %({c})s" + ("::jsonb" if c in JSON_COLUMNS else "") for c in patch)


def _versions(event: Envelope, patch: dict) -> str:
    return orjson.dumps({f: event.version_key for f in patch}).decode()


def _bump(ctx: Context, cur, event: Envelope, program_id: str) -> None:
    cur.execute(BUMP_REVISION, (program_id,))
    _persisted(ctx, event, program_id, cur.fetchone()[0])


def _persisted(ctx: Context, event: Envelope, program_id: str, revision: int, deleted: bool = False) -> None:
    ctx.emit("program.persisted", {"program_id": program_id, "owner_id": event.user_id, "revision": revision,
                                   "deleted": deleted}, cause=event)


# ---- sessions -------------------------------------------------------------------------------

def start_session(ctx: Context, event: Envelope) -> None:
    data = event.data
    session_id = canonical_id(data["session_id"])
    program_id = canonical_id(data["program_id"]) if data.get("program_id") else None
    workout_id = canonical_id(data["workout_id"]) if data.get("workout_id") else None
    cur = ctx.cursor
    if workout_id:
        program_id = _followed_workout(cur, workout_id, program_id, event.user_id)
    elif program_id:
        _followed_program(cur, program_id, event.user_id)
    cur.execute(INSERT_SESSION, {"session_id": session_id, "owner": event.user_id, "program_id": program_id,
                                 "workout_id": workout_id, "started_at": event.timestamp})
    if cur.fetchone() is None:
        _refuse_taken(cur, SESSION_OWNER, "session", session_id, event.user_id, "choose a new session_id")


def _followed_program(cur, program_id: str, user_id: str) -> None:
    cur.execute(PROGRAM_STATE, (program_id,))
    row = cur.fetchone()
    if row is None:
        raise NotYet(f"program {program_id} is not known yet (its program.created may still be on its way)")
    if row[0] != user_id:
        raise Forbidden(f"program {program_id} belongs to another user")
    if row[1]:
        raise NotFound(f"program {program_id} was deleted")


def _followed_workout(cur, workout_id: str, program_id: str | None, user_id: str) -> str:
    """The program of the caller's workout, which must be the one named, if any."""
    cur.execute(WORKOUT_STATE, (workout_id,))
    row = cur.fetchone()
    if row is None:
        raise NotYet(f"workout {workout_id} is not known yet (its workout.added may still be on its way)")
    in_program, owner, gone = row
    if owner != user_id:
        raise Forbidden(f"workout {workout_id} belongs to another user")
    if program_id and in_program != program_id:
        raise InvalidEvent(f"workout {workout_id} is not in program {program_id}", field="data.workout_id")
    if gone:
        raise NotFound(f"workout {workout_id} was removed or its program deleted")
    return in_program


def log_set(ctx: Context, event: Envelope) -> None:
    data = event.data
    session_id, set_id = canonical_id(data["session_id"]), canonical_id(data["set_id"])
    cur = ctx.cursor
    completed_at, sets = _lock_session(cur, session_id, event.user_id)
    if completed_at is not None:
        raise PermanentError(f"session {session_id} was completed at {rfc3339(completed_at)}: start a new session "
                             f"to log more sets", reason="session_completed")
    if sets >= MAX_SETS_PER_SESSION:
        raise PermanentError(f"session {session_id} already holds {MAX_SETS_PER_SESSION} sets",
                             reason="too_many_sets")
    cur.execute(INSERT_SET, {"set_id": set_id, "session_id": session_id, "owner": event.user_id,
                             "exercise": data["exercise"], "reps": data["reps"], "value": data["weight"]["value"],
                             "unit": data["weight"]["unit"], "logged_at": event.timestamp})
    if cur.fetchone() is None:
        _refuse_taken(cur, SET_OWNER, "set", set_id, event.user_id, "choose a new set_id")


def complete_session(ctx: Context, event: Envelope) -> None:
    session_id = canonical_id(event.data["session_id"])
    cur = ctx.cursor
    completed_at, _ = _lock_session(cur, session_id, event.user_id)
    if completed_at is not None:
        return  # completed before: its summary went out then
    cur.execute(COMPLETE_SESSION, (event.timestamp, session_id))
    started_at, completed_at = cur.fetchone()
    cur.execute(TOTALS, (session_id,))
    sets, _, volume_kg = cur.fetchone()
    ctx.emit("workout_session.summarized", {
        "session_id": session_id, "owner_id": event.user_id, "sets": sets,
        "total_volume": {"value": float(volume_kg), "unit": "kg"},
        "started_at": rfc3339(started_at), "completed_at": rfc3339(completed_at)}, cause=event)


def _lock_session(cur, session_id: str, user_id: str) -> tuple:
    """(completed_at, sets logged) of the caller's session, row-locked: a set and the completion
    take turns, so the summary counts every set committed before it."""
    cur.execute(LOCK_SESSION, {"id": session_id})
    row = cur.fetchone()
    if row is None:
        raise NotYet(f"session {session_id} is not known yet (its workout_session.started may still be "
                             f"on its way)")
    owner, completed_at, sets = row
    if owner != user_id:
        raise Forbidden(f"session {session_id} belongs to another user")
    return completed_at, sets


HANDLERS = {
    "program.created": create_program,
    "program.updated": update_program,
    "program.deleted": delete_program,
    "workout.added": add_workout,
    "workout.updated": update_workout,
    "workout.removed": remove_workout,
    "workout_session.started": start_session,
    "workout_session.set_logged": log_set,
    "workout_session.completed": complete_session,
}

# Answered at once to a waiting caller, off program.queries.
QUERIES = {
    "program.list": program_reads.list_programs,
    "program.get": program_reads.get_program,
    "workout_session.get": program_reads.get_session,
}

WORKER = WorkerSpec(name="program", database="program", handlers=HANDLERS, queries=QUERIES,
                    description="training programs and workouts (one plan's changes take turns), workout sessions")
