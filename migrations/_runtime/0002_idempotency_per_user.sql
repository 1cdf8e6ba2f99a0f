-- depends: 0001_runtime_tables
-- An event's id is the client's choice, so it is unique per sender only: keys are claimed per
-- (consumer, user, id). Before, another user who learnt an id (a server-made one included)
-- could claim it first, and the owner's own event was then dead-lettered as a conflict.
-- Rebuilding the key locks the table for as long as the index build takes.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (consumer, user_id, client_generated_id);
