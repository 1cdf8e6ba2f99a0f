"""Reminder worker: each user's workout reminders, fired once per occurrence into their inbox.

    reminder.set          create or replace (owner only, newest event wins, a cancelled one stays so)
    reminder.cancelled    final: nothing fires after it commits
    app.settings.updated  our copy of notifications.workout_reminders (false: nothing fires)
    reminder.list         the caller's reminders with their next occurrence (GET /api/v1/reminders)

The firing is the scheduler's (workers/reminder/scheduler.py), a thread beside the consumer in
every replica; this module keeps the rows it works from.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson

from shared.envelope import Envelope, canonical_id, rfc3339
from shared.errors import Forbidden, InvalidEvent, TransientError
from shared.paging import page
from workers.reminder import scheduler, sql
from workers.reminder.config import settings
from workers.reminder.schedule import InvalidSchedule, check, next_occurrence
from workers.runtime.handler import Context, Request, WorkerSpec


def set_reminder(ctx: Context, event: Envelope) -> None:
    data = event.data
    reminder_id, schedule = canonical_id(data["reminder_id"]), data["schedule"]
    try:
        check(schedule)
    except InvalidSchedule as exc:
        raise InvalidEvent(str(exc), field="data.schedule") from None
    cur = ctx.cursor
    cur.execute(sql.LAST_DECIDED, (reminder_id,))
    row = cur.fetchone()
    cur.execute(sql.SET_REMINDER, {"reminder": reminder_id, "owner": event.user_id, "title": data["title"],
                                   "schedule": orjson.dumps(schedule).decode(), "version": event.version_key,
                                   "ts": event.timestamp,
                                   "next_due": first_due(schedule, event.timestamp, row[0] if row else None)})
    _check_owner(cur.fetchone(), reminder_id, event.user_id)


def first_due(schedule: dict, set_at: datetime, last_due: datetime | None,
              now: datetime | None = None) -> datetime | None:
    """The first occurrence a (re)set reminder waits for: none already decided; for a weekly rule
    none before the event was sent, nor older than the grace period (an event queued offline for
    days does not bring back a week of occurrences); a one-off keeps its instant, so one set a
    little late still fires and one set long after it is recorded missed."""
    now = now or datetime.now(timezone.utc)
    floor = last_due or datetime.min.replace(tzinfo=timezone.utc)
    if "at" in schedule:
        return next_occurrence(schedule, floor)
    return next_occurrence(schedule, max(floor, set_at, now - timedelta(seconds=settings().grace_s)))


def cancel_reminder(ctx: Context, event: Envelope) -> None:
    reminder_id = canonical_id(event.data["reminder_id"])
    cur = ctx.cursor
    cur.execute(sql.CANCEL_REMINDER, {"reminder": reminder_id, "owner": event.user_id, "ts": event.timestamp})
    _check_owner(cur.fetchone(), reminder_id, event.user_id)


def _check_owner(row: tuple, reminder_id: str, user_id: str) -> None:
    owner, landed = row
    if landed:
        return
    if owner is None:  # inserted by a concurrent transaction: next time we see whose it is
        raise TransientError(f"reminder {reminder_id} was being created concurrently")
    if owner != user_id:
        raise Forbidden(f"reminder {reminder_id} belongs to another user")
    # else: ours, and a newer set or a cancel stands: nothing changes


def copy_workout_reminders(ctx: Context, event: Envelope) -> None:
    """The settings worker merges app settings per top-level key, so a newer `notifications`
    object replaces the whole: absent workout_reminders means the default, true."""
    notifications = event.data.get("notifications")
    if notifications is None:
        return
    ctx.cursor.execute(sql.SET_WORKOUT_REMINDERS, {"user": event.user_id, "version": event.version_key,
                                                   "enabled": notifications.get("workout_reminders", True)})


def list_reminders(ctx: Context, request: Request) -> dict:
    cur = ctx.cursor
    cur.execute(sql.WORKOUT_REMINDERS, (request.user_id,))
    enabled = cur.fetchone()[0]
    rows, next_cursor = page(cur, sql.REMINDERS_PAGE, sql.AFTER_REMINDER, {"owner": request.user_id},
                             request.params)
    reminders = [{"reminder_id": reminder_id, "title": title, "schedule": schedule,
                  "next_occurrence": rfc3339(next_due) if next_due else None,
                  "last_occurrence": {"due_at": rfc3339(last_due), "outcome": outcome} if last_due else None,
                  "set_at": rfc3339(set_at)}
                 for reminder_id, title, schedule, next_due, last_due, set_at, outcome in rows]
    return {"workout_reminders": enabled, "reminders": reminders, "next_cursor": next_cursor}


HANDLERS = {
    "reminder.set": set_reminder,
    "reminder.cancelled": cancel_reminder,
    "app.settings.updated": copy_workout_reminders,
}

# Answered at once to a waiting caller, off reminder.queries.
QUERIES = {
    "reminder.list": list_reminders,
}

WORKER = WorkerSpec(name="reminder", database="reminder", handlers=HANDLERS, queries=QUERIES,
                    startup=settings, background=scheduler.run,
                    description="workout reminders, fired once per occurrence into the owner's inbox")
