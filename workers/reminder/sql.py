"""The reminder worker's statements. A change is one statement that both tries the change and
reports the reminder's owner as it stood, so the handler learns "changed", "not yours" or
"nothing to do" in one round trip (as workers/machine/sql.py does for notes)."""
from __future__ import annotations

# (owner before this statement, whether the set landed). The outer SELECT sees the row as it was
# before (same snapshot); the owner never changes. Neither: another transaction inserted this
# reminder_id while we ran, so our snapshot cannot say whose it is.
# A set never revives a cancelled reminder. Its next_due comes from the handler, which read
# last_due_at under LAST_DECIDED's row lock: an occurrence already decided is never due again.
SET_REMINDER = """
WITH landed AS (
    INSERT INTO reminders AS r (reminder_id, owner_id, title, schedule, version, set_at, next_due)
    VALUES (%(reminder)s, %(owner)s, %(title)s, %(schedule)s::jsonb, %(version)s, %(ts)s, %(next_due)s)
    ON CONFLICT (reminder_id) DO UPDATE SET
        title = EXCLUDED.title, schedule = EXCLUDED.schedule, version = EXCLUDED.version,
        set_at = EXCLUDED.set_at, next_due = EXCLUDED.next_due, updated_at = now()
    WHERE r.owner_id = EXCLUDED.owner_id AND r.cancelled_at IS NULL AND r.version < EXCLUDED.version
    RETURNING 1
)
SELECT (SELECT owner_id::text FROM reminders WHERE reminder_id = %(reminder)s), EXISTS (SELECT 1 FROM landed)
"""

# The newest occurrence decided; the lock keeps the scheduler (SKIP LOCKED) off the row until
# the set commits, and waits for a scheduler transaction that holds it.
LAST_DECIDED = "SELECT last_due_at FROM reminders WHERE reminder_id = %s FOR UPDATE"

# Cancelling is final whatever its timestamp: title, schedule and next occurrence go, the row
# stays. The UPDATE waits for a scheduler transaction holding the row: an occurrence claimed
# before the cancel committed fires; none after it.
CANCEL_REMINDER = """
WITH landed AS (
    INSERT INTO reminders AS r (reminder_id, owner_id, version, cancelled_at)
    VALUES (%(reminder)s, %(owner)s, '', %(ts)s)
    ON CONFLICT (reminder_id) DO UPDATE SET
        title = NULL, schedule = NULL, next_due = NULL, updated_at = now(),
        cancelled_at = coalesce(r.cancelled_at, EXCLUDED.cancelled_at)
    WHERE r.owner_id = EXCLUDED.owner_id
    RETURNING 1
)
SELECT (SELECT owner_id::text FROM reminders WHERE reminder_id = %(reminder)s), EXISTS (SELECT 1 FROM landed)
"""

# notifications.workout_reminders, newest event wins (a row back: it landed).
SET_WORKOUT_REMINDERS = """
INSERT INTO reminder_users AS u (user_id, workout_reminders, version)
VALUES (%(user)s, %(enabled)s, %(version)s)
ON CONFLICT (user_id) DO UPDATE SET workout_reminders = EXCLUDED.workout_reminders, version = EXCLUDED.version
WHERE u.version < EXCLUDED.version
"""

# The caller's live reminders, newest set first; set_at at index 5 (see shared.paging.page).
REMINDERS_PAGE = """
SELECT reminder_id::text, title, schedule, next_due, last_due_at, set_at, last_outcome
FROM reminders
WHERE owner_id = %(owner)s AND schedule IS NOT NULL {after}
ORDER BY set_at DESC, reminder_id DESC
LIMIT %(limit)s
"""
AFTER_REMINDER = "AND (set_at, reminder_id) < (%(ts)s, %(id)s)"

WORKOUT_REMINDERS = "SELECT coalesce((SELECT workout_reminders FROM reminder_users WHERE user_id = %s), true)"

# ---- the scheduler (workers/reminder/scheduler.py) ----------------------------------------------

# Due rows, oldest first, that no other replica holds. FOR UPDATE re-checks the WHERE against a
# row changed since our snapshot (a cancel that just committed has set next_due NULL).
CLAIM_DUE = """
SELECT r.reminder_id::text, r.owner_id::text, r.title, r.schedule, r.next_due,
       coalesce(u.workout_reminders, true), now()
FROM reminders r LEFT JOIN reminder_users u ON u.user_id = r.owner_id
WHERE r.next_due <= now() AND r.cancelled_at IS NULL
ORDER BY r.next_due
LIMIT %s
FOR UPDATE OF r SKIP LOCKED
"""

# The claimed rows' decisions, one statement: [[reminder_id, due_at, outcome, next_due], …].
RECORD_DECISIONS = """
UPDATE reminders r SET
    next_due = (d->>3)::timestamptz, last_due_at = (d->>1)::timestamptz, last_outcome = d->>2,
    fired_count = fired_count + (d->>2 = 'fired')::int,
    missed_count = missed_count + (d->>2 = 'missed')::int,
    off_count = off_count + (d->>2 = 'off')::int
FROM jsonb_array_elements(%s::jsonb) AS d
WHERE r.reminder_id = (d->>0)::uuid
"""

EARLIEST_DUE = "SELECT min(next_due) FROM reminders WHERE next_due IS NOT NULL"
