"""The reminder scheduler: a thread in every reminder replica that fires due occurrences.

Each turn claims up to REMINDER_CLAIM_BATCH due rows with FOR UPDATE SKIP LOCKED, so replicas
never take the same row, and in that one transaction decides each occurrence, advances the
row's next_due and writes the `reminder.due` outbox rows. A replica killed before the commit
leaves nothing behind (its locks go with its connection; another replica claims the rows); one
killed after it leaves outbox rows that any replica's relay publishes. The event id derives from
the reminder and the occurrence, so even a relayed copy is the same event to the inbox.

An occurrence is
    fired   into the owner's inbox, as reminder.due;
    off     not fired, because the owner's workout_reminders setting is false;
    missed  not fired, because it is older than REMINDER_GRACE_S when claimed (every replica was
            down); the reminder goes on from its next occurrence.
"""
from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta

import orjson

from shared import contracts
from shared.backoff import Backoff
from shared.config import Config
from shared.envelope import Envelope, new_event, rfc3339
from shared.logging import log
from workers.reminder import sql
from workers.reminder.config import ReminderConfig, settings
from workers.reminder.schedule import next_occurrence
from workers.runtime import db, outbox
from workers.runtime.publisher import BatchPublisher

WORKER = "reminder"
FIRED, MISSED, OFF = "fired", "missed", "off"


def decide(due: datetime, now: datetime, enabled: bool, grace_s: float) -> str:
    if now - due > timedelta(seconds=grace_s):
        return MISSED
    return FIRED if enabled else OFF


def following(schedule: dict, due: datetime, now: datetime, outcome: str, grace_s: float) -> datetime | None:
    """The occurrence after the one just decided. After a miss, the first one still inside the
    grace period (it fires on the next turn), not each older one in turn."""
    after = max(due, now - timedelta(seconds=grace_s)) if outcome == MISSED else due
    return next_occurrence(schedule, after)


def due_event(reminder_id: str, owner: str, title: str, due: datetime, now: datetime) -> Envelope:
    """reminder.due of one occurrence; its id is the occurrence's, whoever fires or relays it."""
    event_id = uuid.uuid5(uuid.UUID(reminder_id), f"reminder.due/{rfc3339(due)}")
    late_s = round(max(0.0, (now - due).total_seconds()), 3)
    event = new_event("reminder.due", owner, {"reminder_id": reminder_id, "title": title, "due_at": rfc3339(due),
                                              "late_s": late_s}, WORKER, event_id)
    contracts.validate(event.to_dict())
    return event


class Scheduler:
    def __init__(self, config: Config, db_url: str, stopping: threading.Event,
                 reminders: ReminderConfig | None = None):
        self.config, self.db_url, self.stopping = config, db_url, stopping
        self.reminders = reminders or settings()
        self._conn = None
        self._publisher: BatchPublisher | None = None

    def run(self) -> None:
        """Turns until `stopping`; a database or broker outage waits and reconnects, anything else
        (our bug) ends the thread, which fails /livez."""
        backoff = Backoff()
        self._publisher = BatchPublisher(self.config.rabbitmq_url, f"worker-{WORKER}-scheduler",
                                         self.config.heartbeat_s)
        log.info("reminder scheduler started", worker=WORKER, tick_s=self.reminders.tick_s,
                 grace_s=self.reminders.grace_s, claim_batch=self.reminders.claim_batch)
        try:
            while not self.stopping.is_set():
                try:
                    claimed = self.turn()
                    backoff.reset()
                except Exception as exc:
                    if not (db.is_unreachable(exc, self._conn) or db.is_transient(exc)):
                        raise
                    self._close()
                    delay = backoff.next()
                    log.warning("reminder scheduler waiting for the database", worker=WORKER,
                                error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                                retry_in_s=round(delay, 2))
                    self.stopping.wait(delay)
                    continue
                if claimed < self.reminders.claim_batch:  # a full batch: more may be due, go again
                    self.stopping.wait(self.reminders.tick_s)
                    self._publisher.keepalive()
        finally:
            self._close()
            self._publisher.close()
            log.info("reminder scheduler stopped", worker=WORKER)

    def turn(self) -> int:
        """Claim, decide and commit one batch of due occurrences, then publish what fired; returns
        how many were claimed."""
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.db_url, f"worker-{WORKER}-scheduler")
        conn, grace = self._conn, self.reminders.grace_s
        try:
            with conn.cursor() as cur:
                cur.execute(f"{db.TIMEOUTS}; {sql.CLAIM_DUE}", (self.reminders.claim_batch,))
                claimed = cur.fetchall()
                decisions, fired = [], []
                for reminder_id, owner, title, schedule, due, enabled, now in claimed:
                    outcome = decide(due, now, enabled, grace)
                    after = following(schedule, due, now, outcome, grace)
                    decisions.append((reminder_id, rfc3339(due), outcome, rfc3339(after) if after else None))
                    if outcome == FIRED:
                        fired.append(due_event(reminder_id, owner, title, due, now))
                if decisions:
                    cur.execute(sql.RECORD_DECISIONS, (orjson.dumps(decisions).decode(),))
                if fired:
                    cur.execute(outbox.INSERT_ROWS, (outbox.rows(fired),))
            conn.commit()
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        if decisions:
            self._log(decisions)
            self._publish(fired)
        return len(claimed)

    def _publish(self, fired: list[Envelope]) -> None:
        try:
            outbox.publish_written(self._conn, self._publisher, self.config.exchange, fired, WORKER)
        except Exception as exc:  # committed: the outbox relay publishes them later
            log.warning("reminder.due publish failed, relay will retry", worker=WORKER, events=len(fired),
                        error=f"{type(exc).__name__}: {exc}"[:300])

    def _log(self, decisions: list[tuple]) -> None:
        counts = {FIRED: 0, MISSED: 0, OFF: 0}
        for decision in decisions:
            counts[decision[2]] += 1
        log.info("reminders decided", worker=WORKER, **counts)
        for reminder_id, due_at, outcome, _ in decisions:
            if outcome == MISSED:  # rare and worth a line of its own: every replica was down
                log.warning("reminder occurrence missed", worker=WORKER, reminder_id=reminder_id, due_at=due_at,
                            grace_s=self.reminders.grace_s)

    def _close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


def run(config: Config, db_url: str, stopping: threading.Event) -> None:
    """WorkerSpec.background of the reminder worker."""
    Scheduler(config, db_url, stopping).run()
