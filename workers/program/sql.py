"""The program worker's statements. A change of a plan starts with LOCK_PROGRAM and ends with
BUMP_REVISION inside the same transaction: the lock makes replicas take turns on one plan."""
from __future__ import annotations

# ---- plans ----------------------------------------------------------------------------------

LOCK_PROGRAM = """
SELECT owner_id::text, versions, deleted_at IS NOT NULL FROM programs WHERE program_id = %s FOR UPDATE
"""

PROGRAM_OWNER = "SELECT owner_id::text FROM programs WHERE program_id = %s"

# No row back: the program_id is taken (by this user or another).
INSERT_PROGRAM = """
INSERT INTO programs (program_id, owner_id, name, description, created_at)
VALUES (%(program_id)s, %(owner)s, %(name)s, %(description)s, %(created_at)s)
ON CONFLICT (program_id) DO NOTHING
RETURNING revision
"""

# Column names come from PATCHABLE_PROGRAM only, never from the event.
PATCH_PROGRAM = """
UPDATE programs SET {columns}, versions = versions || %(versions)s::jsonb, revision = revision + 1, updated_at = now()
WHERE program_id = %(program_id)s
RETURNING revision
"""
PATCHABLE_PROGRAM = ("name", "description")

DELETE_PROGRAM = """
UPDATE programs SET deleted_at = now(), revision = revision + 1, updated_at = now()
WHERE program_id = %s
RETURNING revision
"""

BUMP_REVISION = """
UPDATE programs SET revision = revision + 1, updated_at = now() WHERE program_id = %s RETURNING revision
"""

# Read under the program's lock: positions never repeat, removed workouts keep theirs.
WORKOUT_SLOTS = """
SELECT count(*) FILTER (WHERE removed_at IS NULL), coalesce(max(position), 0) FROM workouts WHERE program_id = %s
"""

# A plan's workouts in one statement, as one JSON array of [id, program, name, day, exercises,
# position]. No rows back for ids already taken; the caller finds out whose.
INSERT_WORKOUTS = """
INSERT INTO workouts (workout_id, program_id, name, day_of_week, exercises, position)
SELECT (r->>0)::uuid, (r->>1)::uuid, r->>2, (r->>3)::smallint, r->4, (r->>5)::integer
FROM jsonb_array_elements(%s::jsonb) AS r
ON CONFLICT (workout_id) DO NOTHING
RETURNING workout_id::text
"""

# The workout with its program's owner; the program's lock covers its workouts.
WORKOUT = """
SELECT w.program_id::text, p.owner_id::text, w.versions, w.removed_at IS NOT NULL
FROM workouts w JOIN programs p ON p.program_id = w.program_id
WHERE w.workout_id = %s
"""

PATCH_WORKOUT = """
UPDATE workouts SET {columns}, versions = versions || %(versions)s::jsonb, updated_at = now()
WHERE workout_id = %(workout_id)s
"""
PATCHABLE_WORKOUT = ("name", "day_of_week", "exercises")

REMOVE_WORKOUT = "UPDATE workouts SET removed_at = now(), updated_at = now() WHERE workout_id = %s"

# ---- sessions -------------------------------------------------------------------------------

# No row back: the session_id is taken.
INSERT_SESSION = """
INSERT INTO workout_sessions (session_id, owner_id, program_id, workout_id, started_at)
VALUES (%(session_id)s, %(owner)s, %(program_id)s, %(workout_id)s, %(started_at)s)
ON CONFLICT (session_id) DO NOTHING
RETURNING session_id
"""

SESSION_OWNER = "SELECT owner_id::text FROM workout_sessions WHERE session_id = %s"

PROGRAM_STATE = "SELECT owner_id::text, deleted_at IS NOT NULL FROM programs WHERE program_id = %s"

WORKOUT_STATE = """
SELECT w.program_id::text, p.owner_id::text, p.deleted_at IS NOT NULL OR w.removed_at IS NOT NULL
FROM workouts w JOIN programs p ON p.program_id = w.program_id
WHERE w.workout_id = %s
"""

# A set and a completion of one session take turns: the summary counts every set committed before it.
LOCK_SESSION = """
SELECT owner_id::text, completed_at, (SELECT count(*) FROM workout_sets s WHERE s.session_id = %(id)s)
FROM workout_sessions WHERE session_id = %(id)s FOR UPDATE
"""

# No row back: the set_id is taken.
INSERT_SET = """
INSERT INTO workout_sets (set_id, session_id, owner_id, exercise, reps, weight_value, weight_unit, logged_at)
VALUES (%(set_id)s, %(session_id)s, %(owner)s, %(exercise)s, %(reps)s, %(value)s, %(unit)s, %(logged_at)s)
ON CONFLICT (set_id) DO NOTHING
RETURNING set_id
"""

SET_OWNER = "SELECT owner_id::text, session_id::text FROM workout_sets WHERE set_id = %s"

LB_IN_KG = 0.45359237

# Volume = Σ reps × weight, in kg whatever unit each set was logged in.
_KG = f"w.weight_value * CASE w.weight_unit WHEN 'lb' THEN {LB_IN_KG} ELSE 1 END"
TOTALS = f"""
SELECT count(*), coalesce(sum(w.reps), 0), round(coalesce(sum(w.reps * {_KG}), 0), 2)
FROM workout_sets w WHERE w.session_id = %s
"""

COMPLETE_SESSION = """
UPDATE workout_sessions SET completed_at = greatest(%s, started_at) WHERE session_id = %s
RETURNING started_at, completed_at
"""

# ---- reads ----------------------------------------------------------------------------------

# Newest first; created_at sits at index 5, where shared.paging.page reads the cursor from.
PROGRAM_PAGE = """
SELECT program_id::text, name, description, revision, updated_at, created_at
FROM programs
WHERE owner_id = %(owner)s AND deleted_at IS NULL {after}
ORDER BY created_at DESC, program_id DESC
LIMIT %(limit)s
"""
AFTER_PROGRAM = "AND (created_at, program_id) < (%(ts)s, %(id)s)"

PROGRAM = """
SELECT program_id::text, name, description, revision, updated_at, created_at, owner_id::text,
       deleted_at IS NOT NULL
FROM programs WHERE program_id = %s
"""

WORKOUTS_OF = """
SELECT program_id::text, workout_id::text, name, day_of_week, position, exercises
FROM workouts WHERE program_id = ANY(%s::uuid[]) AND removed_at IS NULL
ORDER BY program_id, position
"""

SESSION = """
SELECT session_id::text, owner_id::text, program_id::text, workout_id::text, started_at, completed_at
FROM workout_sessions WHERE session_id = %s
"""

SETS_OF = """
SELECT set_id::text, exercise, reps, weight_value, weight_unit, logged_at
FROM workout_sets WHERE session_id = %s
ORDER BY logged_at, seq
"""
