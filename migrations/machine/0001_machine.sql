-- depends: 0001_runtime_tables
-- Notes per user and gym machine, and each user's equipment preferences.
-- version columns hold "<UTC timestamp>/<event id>": byte order ("C") is time order, ties by id.

-- machine_id is the machine's code as the app reads it (often a QR code), not a UUID.
-- A deleted note keeps its row as a tombstone (so its id stays its author's and a late edit
-- cannot bring it back) but not its text.
CREATE TABLE machine_notes (
    note_id    uuid PRIMARY KEY,
    author_id  uuid        NOT NULL,
    machine_id text        NOT NULL CHECK (machine_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    gym_id     uuid,
    body       text,
    created_at timestamptz NOT NULL,   -- the creating event's timestamp: when the author wrote it
    updated_at timestamptz NOT NULL,   -- the timestamp of the latest change that landed
    version    text COLLATE "C" NOT NULL,
    deleted_at timestamptz,
    CHECK (CASE WHEN deleted_at IS NULL THEN body IS NOT NULL AND char_length(body) BETWEEN 1 AND 2000
                ELSE body IS NULL END)
);
-- the read: one author's live notes on one machine, newest first; (created_at, note_id) is the cursor
CREATE INDEX machine_notes_author_machine ON machine_notes (author_id, machine_id, created_at DESC, note_id DESC)
    WHERE deleted_at IS NULL;

-- Replaced whole by each newer equipment.prefs.updated.
CREATE TABLE equipment_prefs (
    user_id    uuid PRIMARY KEY,
    prefs      jsonb       NOT NULL,
    version    text COLLATE "C" NOT NULL,
    updated_at timestamptz NOT NULL    -- the winning event's timestamp
);
