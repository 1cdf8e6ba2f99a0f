-- depends: 0001_runtime_tables
-- Each user's workout reminders, and the copy of their workout_reminders setting (workers/reminder).
-- version columns hold "<UTC timestamp>/<event id>": byte order ("C") is time order, ties by id.

-- A cancelled reminder keeps its row as a tombstone (so its id stays its owner's and no set,
-- older or newer, brings it back) but not its title or schedule. A cancel that arrives before
-- its set leaves a tombstone with neither.
CREATE TABLE reminders (
    reminder_id  uuid PRIMARY KEY,
    owner_id     uuid        NOT NULL,
    title        text,
    schedule     jsonb,                  -- {"at": …} or {"weekly": {days_of_week, local_time, timezone}}
    version      text COLLATE "C" NOT NULL,   -- of the newest reminder.set that landed ('' if none did)
    set_at       timestamptz,            -- that event's timestamp: the list's order
    cancelled_at timestamptz,
    -- The scheduler's work list: the next occurrence not yet decided; NULL when none is left
    -- (a one-off that fired, a cancelled reminder). Advanced in the transaction that claims it.
    next_due     timestamptz,
    last_due_at  timestamptz,            -- the newest occurrence decided, and how
    last_outcome text CHECK (last_outcome IN ('fired', 'missed', 'off')),
    fired_count  integer     NOT NULL DEFAULT 0,
    missed_count integer     NOT NULL DEFAULT 0,   -- older than REMINDER_GRACE_S when a replica got to it
    off_count    integer     NOT NULL DEFAULT 0,   -- due while the owner's workout_reminders was false
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (cancelled_at IS NULL OR (title IS NULL AND schedule IS NULL AND next_due IS NULL)),
    CHECK ((title IS NULL) = (schedule IS NULL))
);
-- the scheduler's claim: the oldest due rows first
CREATE INDEX reminders_next_due ON reminders (next_due) WHERE next_due IS NOT NULL;
-- the list: one owner's live reminders, newest set first; (set_at, reminder_id) is the cursor
CREATE INDEX reminders_owner ON reminders (owner_id, set_at DESC, reminder_id DESC) WHERE schedule IS NOT NULL;

-- notifications.workout_reminders from app.settings.updated, newest event wins. No row: true
-- (the app's default).
CREATE TABLE reminder_users (
    user_id           uuid PRIMARY KEY,
    workout_reminders boolean NOT NULL,
    version           text COLLATE "C" NOT NULL
);
