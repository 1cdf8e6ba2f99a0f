"""Reminder worker on the real broker and database: reminders set through the ingress fire once
into the owner's inbox; any number of replicas fire each occurrence exactly once, on time, and
through a kill -9; an occurrence due while every replica was down fires once on return, one
older than the grace period is recorded missed; workout_reminders false fires nothing; a cancel
is final."""
from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import psycopg2
import pytest

from shared.envelope import rfc3339
from tests.support.bus import dead_letters, publish
from tests.support.db import processed, query
from tests.support.events import event
from tests.support.http import call
from tests.support.processes import answering_queries, run_cli
from tests.support.rabbit import wait_for
from workers.reminder.schedule import next_occurrence

EVENTS = "/api/v1/notify/events"


@pytest.fixture
def reminder_worker(start_worker, make_database):
    """start(db=None, **env) → (db, process) of a reminder worker consuming and answering."""
    def start(db: str | None = None, **env):
        db = db or make_database("reminder")
        proc = start_worker("reminder", REMINDER_DATABASE_URL=db, **env)
        wait_for(lambda: any(l.get("msg") == "consuming" for l in proc.logs()) and answering_queries(proc),
                 message="reminder worker consuming")
        return db, proc
    return start


def user() -> str:
    return str(uuid.uuid4())


def in_(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def one_off(at: datetime) -> dict:
    return {"at": rfc3339(at)}


def set_reminder(rmq, owner: str, schedule: dict, title: str = "Leg day", reminder_id: str | None = None,
                 **envelope) -> tuple[str, dict]:
    reminder_id = reminder_id or str(uuid.uuid4())
    body = publish(rmq, "reminder.set", {"reminder_id": reminder_id, "title": title, "schedule": schedule}, owner,
                   **envelope)
    return reminder_id, body


def row(db: str, reminder_id: str) -> dict:
    rows = query(db, "SELECT next_due, last_due_at, last_outcome, fired_count, missed_count, off_count, "
                     "cancelled_at IS NOT NULL FROM reminders WHERE reminder_id = %s", (reminder_id,))
    values = rows[0] if rows else (None,) * 7  # not processed yet
    return dict(zip(("next_due", "last_due", "outcome", "fired", "missed", "off", "cancelled"), values))


def decided(db: str, reminder_id: str, outcome: str | None = None, timeout: float = 20) -> dict:
    """The reminder's row once an occurrence of it has been decided (`outcome`, if given)."""
    wait_for(lambda: row(db, reminder_id)["outcome"] in ((outcome,) if outcome else ("fired", "missed", "off")),
             timeout=timeout, message=f"reminder {reminder_id} decided")
    return row(db, reminder_id)


def fired_events(rmq, tap: str, quiet_s: float = 1.5) -> list[dict]:
    """Every reminder.due on `tap` until it has been quiet for `quiet_s` (so a late duplicate shows)."""
    seen, quiet_since = [], time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        batch = [orjson.loads(body) for _, body in rmq.drain(tap)]
        if batch:
            seen.extend(batch)
            quiet_since = time.monotonic()
        time.sleep(0.1)
    return seen


# ---- through the ingress, into the inbox ------------------------------------------------------------

def test_a_reminder_set_through_the_ingress_fires_once_into_the_owners_inbox(
        reminder_worker, start_worker, make_database, start_ingress, bearer, rmq):
    db, _ = reminder_worker()
    notify = start_worker("notify", NOTIFY_DATABASE_URL=make_database("notify"))
    wait_for(lambda: answering_queries(notify), message="notify answering")
    port = start_ingress()
    me, other = user(), user()
    due = in_(4).replace(microsecond=0)
    weekly = {"weekly": {"days_of_week": ["mon", "thu"], "local_time": "07:00", "timezone": "Europe/Berlin"}}
    soon, standing = str(uuid.uuid4()), str(uuid.uuid4())
    # Given the app sets a one-off reminder due in a few seconds and a weekly one
    for reminder_id, title, schedule in ((soon, "Leg day", one_off(due)), (standing, "Push", weekly)):
        status, body, _ = call(port, "POST", EVENTS, bearer(me), event(
            "reminder.set", user_id=me, data={"reminder_id": reminder_id, "title": title, "schedule": schedule}))
        assert status == 202, body
    # Then the list shows both with their next occurrence, and nobody else sees them
    def listed():
        status, body, _ = call(port, "GET", "/api/v1/reminders", bearer(me))
        assert status == 200, body
        return body if len(body["reminders"]) == 2 else None
    body = wait_for(listed, message="both reminders listed")
    assert body["workout_reminders"] is True and body["next_cursor"] is None
    by_id = {r["reminder_id"]: r for r in body["reminders"]}
    assert by_id[soon]["next_occurrence"] == rfc3339(due) and by_id[soon]["title"] == "Leg day"
    expected = next_occurrence(weekly, datetime.now(timezone.utc))
    assert datetime.fromisoformat(by_id[standing]["next_occurrence"]) == expected
    assert call(port, "GET", "/api/v1/reminders", bearer(other))[1]["reminders"] == []
    assert call(port, "GET", "/api/v1/reminders")[0] == 401

    # When it comes due, Then exactly one reminder.due lands in my inbox
    def inbox_items():
        status, body, _ = call(port, "GET", "/api/v1/inbox", bearer(me))
        assert status == 200, body
        return [i for i in body["items"] if i["event_type"] == "reminder.due"]
    (item,) = wait_for(inbox_items, timeout=20, message="reminder.due in the inbox")
    assert item["data"]["reminder_id"] == soon and item["data"]["title"] == "Leg day"
    assert item["data"]["due_at"] == rfc3339(due)
    assert decided(db, soon)["outcome"] == "fired"
    time.sleep(2)
    assert len(inbox_items()) == 1
    # And the list says it fired and has nothing left to fire
    (listed_soon,) = [r for r in call(port, "GET", "/api/v1/reminders", bearer(me))[1]["reminders"]
                      if r["reminder_id"] == soon]
    assert listed_soon["next_occurrence"] is None
    assert listed_soon["last_occurrence"] == {"due_at": rfc3339(due), "outcome": "fired"}

    # An unknown time zone is refused with its reason; another user's reminder id is forbidden
    bad = {"weekly": {**weekly["weekly"], "timezone": "Mars/Olympus_Mons"}}
    status, body, _ = call(port, "POST", EVENTS, bearer(me), event(
        "reminder.set", user_id=me, data={"reminder_id": str(uuid.uuid4()), "title": "x", "schedule": bad}))
    assert status == 202
    theft = publish(rmq, "reminder.cancelled", {"reminder_id": standing}, other)
    letters = dead_letters(rmq, "reminder", 2)
    assert letters[theft["client_generated_id"]]["x-dead-reason"] == "forbidden"
    (refused,) = [h for i, h in letters.items() if i != theft["client_generated_id"]]
    assert refused["x-dead-reason"] == "invalid" and "unknown time zone" in refused["x-dead-detail"]
    assert row(db, standing)["cancelled"] is False


# ---- exactly once, on time, with replicas --------------------------------------------------------

def test_500_reminders_due_together_fire_exactly_once_on_two_replicas_none_late_by_2s(reminder_worker, rmq):
    db, _ = reminder_worker(REMINDER_CLAIM_BATCH=100)
    reminder_worker(db, REMINDER_CLAIM_BATCH=100)
    tap = rmq.tap("app.events", "reminder.due")
    owners = [user() for _ in range(50)]
    start = in_(8)
    sets = [set_reminder(rmq, owners[i % 50], one_off(start + timedelta(milliseconds=4 * i)), f"r{i}")
            for i in range(500)]
    processed(db, *(body for _, body in sets), timeout=30)
    assert query(db, "SELECT count(*) FROM reminders WHERE next_due IS NOT NULL")[0][0] == 500

    wait_for(lambda: rmq.depth(tap) >= 500, timeout=40, message="500 reminder.due")
    fired = fired_events(rmq, tap)
    assert len(fired) == 500                                          # nothing doubled, nothing lost
    assert {e["data"]["reminder_id"] for e in fired} == {rid for rid, _ in sets}
    late = [datetime.fromisoformat(e["timestamp"]) - datetime.fromisoformat(e["data"]["due_at"]) for e in fired]
    assert max(late) <= timedelta(seconds=2), max(late)
    assert min(late) >= timedelta(0)                                  # never early
    assert query(db, "SELECT sum(fired_count), count(*) FILTER (WHERE next_due IS NULL) FROM reminders") == [(500, 500)]


def test_a_replica_killed_while_holding_claimed_rows_loses_and_doubles_nothing(reminder_worker, rmq):
    db, doomed = reminder_worker(REMINDER_CLAIM_BATCH=300)
    reminder_worker(db, REMINDER_CLAIM_BATCH=300)
    tap = rmq.tap("app.events", "reminder.due")
    due = in_(6)
    sets = [set_reminder(rmq, user(), one_off(due), f"k{i}") for i in range(1500)]
    processed(db, *(body for _, body in sets), timeout=60)
    # Hold both replicas inside their claim transactions: each has locked its rows and waits to
    # write the outbox. Then kill -9 one of them.
    holder = psycopg2.connect(db)
    with holder.cursor() as cur:
        cur.execute("LOCK TABLE outbox IN SHARE MODE")
        wait_for(lambda: query(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                   "'worker-reminder-scheduler' AND wait_event_type = 'Lock'")[0][0] == 2,
                 timeout=30, message="both replicas holding claimed rows")
        held = query(db, "SELECT count(*) FROM reminders r WHERE next_due IS NOT NULL AND NOT EXISTS "
                         "(SELECT 1 FROM reminders s WHERE s.reminder_id = r.reminder_id FOR UPDATE SKIP LOCKED)")
        assert held[0][0] == 600  # two claims of 300
        doomed.kill()  # SIGKILL: its connection drops with its claim uncommitted
    holder.rollback()  # the survivor commits; the killed replica's transaction never does
    holder.close()

    wait_for(lambda: rmq.depth(tap) >= 1500, timeout=60, message="1500 reminder.due")
    fired = fired_events(rmq, tap, quiet_s=3)
    assert len(fired) == 1500
    assert Counter(e["data"]["reminder_id"] for e in fired) == Counter({rid: 1 for rid, _ in sets})
    assert query(db, "SELECT sum(fired_count), max(fired_count) FROM reminders") == [(1500, 1)]


# ---- restarts and the grace period ---------------------------------------------------------------

def test_an_occurrence_due_while_every_replica_was_down_fires_once_on_return_older_ones_are_missed(
        reminder_worker, rmq):
    db, proc = reminder_worker(REMINDER_GRACE_S=60)
    tap = rmq.tap("app.events", "reminder.due")
    owner = user()
    soon, _ = set_reminder(rmq, owner, one_off(in_(3)), "soon")
    long_ago, body = set_reminder(rmq, owner, one_off(in_(-3600)), "long ago")
    processed(db, body)
    assert decided(db, long_ago)["outcome"] == "missed"       # older than the grace period: recorded
    # Given every replica is down when the other comes due
    proc.terminate()
    time.sleep(5)
    assert row(db, soon)["outcome"] is None
    # When one comes back, Then it fires once, late
    reminder_worker(db, REMINDER_GRACE_S=60)
    assert decided(db, soon)["outcome"] == "fired"
    (fired,) = fired_events(rmq, tap)
    assert fired["data"]["reminder_id"] == soon and fired["data"]["late_s"] >= 1
    assert row(db, long_ago)["missed"] == 1 and row(db, long_ago)["fired"] == 0


def test_a_weekly_reminder_keeps_its_place_after_an_outage_longer_than_the_grace_period(reminder_worker, rmq):
    db, _ = reminder_worker(REMINDER_GRACE_S=30)
    owner = user()
    weekly = {"weekly": {"days_of_week": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "local_time": "07:00",
                         "timezone": "America/New_York"}}
    reminder_id, body = set_reminder(rmq, owner, weekly)
    processed(db, body)
    # Given its occurrence came and went two days ago while nothing ran (the row as a replica left it)
    stale = next_occurrence(weekly, datetime.now(timezone.utc) - timedelta(days=3))
    query(db, "UPDATE reminders SET next_due = %s WHERE reminder_id = %s", (stale, reminder_id))
    # Then it is recorded missed once, and waits for its next 07:00 in New York, not each missed day
    state = decided(db, reminder_id, "missed")
    assert state["missed"] == 1 and state["fired"] == 0
    assert state["next_due"] == next_occurrence(weekly, datetime.now(timezone.utc) - timedelta(seconds=30))


# ---- the setting, cancelling, ownership and order ----------------------------------------------------

def test_nothing_fires_while_workout_reminders_is_off(reminder_worker, rmq):
    db, _ = reminder_worker()
    tap = rmq.tap("app.events", "reminder.due")
    owner = user()
    off = publish(rmq, "app.settings.updated", {"notifications": {"workout_reminders": False}}, owner,
                  timestamp=rfc3339(in_(-5)))
    processed(db, off)
    quiet, _ = set_reminder(rmq, owner, one_off(in_(2)), "while off")
    assert decided(db, quiet)["outcome"] == "off"
    assert fired_events(rmq, tap) == []
    # An older settings event arriving late changes nothing; a newer one turns reminders back on
    older = publish(rmq, "app.settings.updated", {"notifications": {"workout_reminders": True}}, owner,
                    timestamp=rfc3339(in_(-10)))
    processed(db, older)
    assert query(db, "SELECT workout_reminders FROM reminder_users WHERE user_id = %s", (owner,)) == [(False,)]
    on = publish(rmq, "app.settings.updated", {"theme": "dark", "notifications": {"push": True}}, owner)
    processed(db, on)  # a newer notifications object without the key: the default, on
    loud, _ = set_reminder(rmq, owner, one_off(in_(2)), "back on")
    assert decided(db, loud)["outcome"] == "fired"
    (fired,) = fired_events(rmq, tap)
    assert fired["data"]["reminder_id"] == loud


def test_a_cancel_is_final_and_only_the_owner_can_change_a_reminder(reminder_worker, rmq):
    db, _ = reminder_worker()
    tap = rmq.tap("app.events", "reminder.due")
    owner, stranger = user(), user()
    # A reminder cancelled before it comes due never fires, and a later set does not revive it
    gone, _ = set_reminder(rmq, owner, one_off(in_(3)), "gone", timestamp=rfc3339(in_(-10)))
    cancel = publish(rmq, "reminder.cancelled", {"reminder_id": gone}, owner, timestamp=rfc3339(in_(-9)))
    processed(db, cancel)
    _, revive = set_reminder(rmq, owner, one_off(in_(3)), "again", reminder_id=gone)
    # A cancel that arrives before its set leaves a tombstone the set cannot pass
    early = str(uuid.uuid4())
    publish(rmq, "reminder.cancelled", {"reminder_id": early}, owner)
    _, late_set = set_reminder(rmq, owner, one_off(in_(3)), "late", reminder_id=early,
                               timestamp=rfc3339(in_(-30)))
    # An older set arriving after a newer one does not overwrite it
    kept, newer = set_reminder(rmq, owner, one_off(in_(3)), "newer", timestamp=rfc3339(in_(-1)))
    _, older = set_reminder(rmq, owner, one_off(in_(600)), "older", reminder_id=kept, timestamp=rfc3339(in_(-20)))
    # Another user can neither set nor cancel it
    theft = set_reminder(rmq, stranger, one_off(in_(3)), "mine now", reminder_id=kept)[1]
    processed(db, revive, late_set, newer, older)
    letters = dead_letters(rmq, "reminder", 1)
    assert letters[theft["client_generated_id"]]["x-dead-reason"] == "forbidden"

    assert decided(db, kept)["outcome"] == "fired"
    (fired,) = fired_events(rmq, tap, quiet_s=3)
    assert fired["data"] == {**fired["data"], "reminder_id": kept, "title": "newer"}
    assert row(db, gone)["cancelled"] and row(db, gone)["outcome"] is None
    assert row(db, early)["cancelled"] and row(db, early)["outcome"] is None


def test_a_cancel_sent_while_an_occurrence_is_claimed_waits_for_it_and_stops_every_later_one(
        reminder_worker, rmq):
    db, _ = reminder_worker()
    tap = rmq.tap("app.events", "reminder.due")
    owner = user()
    daily = {"weekly": {"days_of_week": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                        "local_time": "07:00", "timezone": "UTC"}}
    reminder_id, body = set_reminder(rmq, owner, daily)
    processed(db, body)
    holder = psycopg2.connect(db)
    with holder.cursor() as cur:
        # Given the scheduler has claimed today's occurrence and not yet committed (it waits on the outbox)
        cur.execute("LOCK TABLE outbox IN SHARE MODE")
        query(db, "UPDATE reminders SET next_due = now() - interval '1 second' WHERE reminder_id = %s",
              (reminder_id,))
        wait_for(lambda: query(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                   "'worker-reminder-scheduler' AND wait_event_type = 'Lock'")[0][0] == 1,
                 message="the occurrence claimed")
        # When the owner cancels meanwhile
        cancel = publish(rmq, "reminder.cancelled", {"reminder_id": reminder_id}, owner)
        time.sleep(1)
        assert not row(db, reminder_id)["cancelled"]   # the cancel waits for the claim's row lock
    holder.rollback()
    holder.close()
    processed(db, cancel)
    # Then the claimed occurrence fired once (it was decided first), and nothing is left to fire
    (fired,) = fired_events(rmq, tap)
    assert fired["data"]["reminder_id"] == reminder_id
    state = row(db, reminder_id)
    assert state["cancelled"] and state["next_due"] is None and state["fired"] == 1


def test_migration_rolls_back_and_applies_again(make_database):
    from workers.ops import migrate
    db = make_database("reminder")
    assert migrate.rollback("reminder", db, count=1) == 1
    assert migrate.apply("reminder", db) == 1


def test_prune_removes_reminders_with_nothing_left_to_fire_once_past_the_idempotency_window(make_database):
    db = make_database("reminder")
    weekly = '{"weekly": {"days_of_week": ["mon"], "local_time": "07:00", "timezone": "UTC"}}'
    rows = {  # reminder → (title and schedule, next_due, updated … ago)
        "old tombstone": (None, None, "20 days"), "old fired one-off": ('{"at": "2026-01-01T07:00:00Z"}', None, "20 days"),
        "new tombstone": (None, None, "1 day"), "old live weekly": (weekly, "2027-01-04T07:00:00Z", "20 days")}
    ids = {}
    for name, (schedule, next_due, age) in rows.items():
        ids[name] = str(uuid.uuid4())
        cancelled = schedule is None
        query(db, "INSERT INTO reminders (reminder_id, owner_id, title, schedule, version, set_at, cancelled_at, "
                  "next_due, updated_at) VALUES (%s, %s, %s, %s::jsonb, '', now(), %s, %s, now() - %s::interval)",
              (ids[name], user(), None if cancelled else name, schedule, datetime.now(timezone.utc) if cancelled else None,
               next_due, age))
    result = run_cli("prune", "reminder", "--json", env={"REMINDER_DATABASE_URL": db})
    (line,) = [orjson.loads(l) for l in result.stdout.splitlines() if '"reminders"' in l]
    assert line["removed"] == 2
    left = {r[0] for r in query(db, "SELECT reminder_id::text FROM reminders")}
    assert left == {ids["new tombstone"], ids["old live weekly"]}
