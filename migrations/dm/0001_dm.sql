-- depends: 0001_runtime_tables
-- Direct messages: conversations, who takes part in them, and their messages.
CREATE TABLE conversations (
    conversation_id uuid PRIMARY KEY,
    started_by      uuid        NOT NULL,
    title           text        CHECK (char_length(title) BETWEEN 1 AND 120),
    -- seq of the newest message; the next one is assigned under this row's lock, so a
    -- conversation's messages are numbered 1, 2, 3… in commit order whatever replica stores them
    last_seq        bigint      NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE participants (
    conversation_id uuid        NOT NULL REFERENCES conversations ON DELETE CASCADE,
    user_id         uuid        NOT NULL,
    -- read marker: the newest message this participant has read; it only moves forward
    read_seq        bigint,
    read_message_id uuid,
    read_at         timestamptz,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id),
    CHECK ((read_seq IS NULL) = (read_message_id IS NULL))
);
CREATE INDEX participants_user ON participants (user_id);

CREATE TABLE messages (
    message_id      uuid PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES conversations ON DELETE CASCADE,
    seq             bigint      NOT NULL CHECK (seq > 0),
    sender_id       uuid        NOT NULL,
    body            text        NOT NULL CHECK (char_length(body) BETWEEN 1 AND 4000),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- pages walk this index newest first: (conversation_id, seq) is the cursor
    UNIQUE (conversation_id, seq)
);
