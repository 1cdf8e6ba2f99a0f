-- depends: 0001_runtime_tables
-- Each user's inbox: the outcome events addressed to them (workers/notify.py).

-- One row per user who ever had an item: the number of their newest item. It is bumped under
-- this row's lock, so a user's items are numbered 1, 2, 3… in commit order whatever replica
-- stores them, and a reader holding cursor n never misses an item committed after it read
-- (a global sequence would let an item with a smaller number commit after a larger one was
-- read). Rows are never deleted, even when every item is pruned: numbers never restart, so a
-- cursor stays valid.
CREATE TABLE inboxes (
    user_id  uuid   PRIMARY KEY,
    last_seq bigint NOT NULL CHECK (last_seq >= 0)
);

CREATE TABLE inbox_items (
    user_id    uuid        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq > 0),
    item_id    uuid        NOT NULL,  -- the outcome event's client_generated_id
    event_type text        NOT NULL,
    data       jsonb       NOT NULL,
    at         timestamptz NOT NULL,  -- the outcome event's timestamp
    -- a replay or a redelivery of the same outcome adds nothing
    PRIMARY KEY (user_id, item_id),
    -- pages walk this index oldest first; the bound deletes below a user's seq on it
    UNIQUE (user_id, seq)
);
-- retention (INBOX_RETENTION_S) deletes the oldest, across users
CREATE INDEX inbox_items_at ON inbox_items (at);
