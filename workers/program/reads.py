"""Program worker, read side: a user's programs with their workouts, and a session's sets (owner only)."""
from __future__ import annotations

from shared.envelope import canonical_id, rfc3339
from shared.errors import Forbidden, NotFound
from workers.runtime.handler import Context, Request
from shared.paging import page
from workers.program.sql import AFTER_PROGRAM, PROGRAM, PROGRAM_PAGE, SESSION, SETS_OF, TOTALS, WORKOUTS_OF


def list_programs(ctx: Context, request: Request) -> dict:
    cur = ctx.cursor
    rows, next_cursor = page(cur, PROGRAM_PAGE, AFTER_PROGRAM, {"owner": request.user_id}, request.params)
    return {"programs": _with_workouts(cur, rows), "next_cursor": next_cursor}


def get_program(ctx: Context, request: Request) -> dict:
    program_id = canonical_id(request.params["program_id"])
    cur = ctx.cursor
    cur.execute(PROGRAM, (program_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"program {program_id} does not exist")
    *program, owner, deleted = row
    if owner != request.user_id:
        raise Forbidden(f"program {program_id} belongs to another user")
    if deleted:
        raise NotFound(f"program {program_id} was deleted")
    return _with_workouts(cur, [program])[0]


def _with_workouts(cur, rows: list) -> list[dict]:
    programs = {}
    for program_id, name, description, revision, updated_at, created_at in rows:
        programs[program_id] = {"program_id": program_id, "name": name, "description": description,
                                "revision": revision, "created_at": rfc3339(created_at),
                                "updated_at": rfc3339(updated_at), "workouts": []}
    if programs:
        cur.execute(WORKOUTS_OF, (list(programs),))
        for program_id, workout_id, name, day_of_week, position, exercises in cur.fetchall():
            programs[program_id]["workouts"].append({"workout_id": workout_id, "name": name,
                                                     "day_of_week": day_of_week, "position": position,
                                                     "exercises": exercises})
    return list(programs.values())


def get_session(ctx: Context, request: Request) -> dict:
    session_id = canonical_id(request.params["session_id"])
    cur = ctx.cursor
    cur.execute(SESSION, (session_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"session {session_id} does not exist")
    _, owner, program_id, workout_id, started_at, completed_at = row
    if owner != request.user_id:
        raise Forbidden(f"session {session_id} belongs to another user")
    cur.execute(SETS_OF, (session_id,))
    sets = [{"set_id": set_id, "exercise": exercise, "reps": reps,
             "weight": {"value": float(value), "unit": unit}, "logged_at": rfc3339(logged_at)}
            for set_id, exercise, reps, value, unit, logged_at in cur.fetchall()]
    cur.execute(TOTALS, (session_id,))
    count, reps, volume_kg = cur.fetchone()
    return {"session_id": session_id, "program_id": program_id, "workout_id": workout_id,
            "status": "completed" if completed_at else "in_progress", "started_at": rfc3339(started_at),
            "completed_at": rfc3339(completed_at) if completed_at else None, "sets": sets,
            "totals": {"sets": count, "reps": reps, "volume": {"value": float(volume_kg), "unit": "kg"}}}
