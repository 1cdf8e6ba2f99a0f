-- Tables the shared consumer runtime needs in every domain database.
CREATE TABLE idempotency_keys (
    consumer            text        NOT NULL,
    client_generated_id uuid        NOT NULL,
    user_id             uuid        NOT NULL,
    event_type          text        NOT NULL,
    payload_hash        bytea       NOT NULL,
    processed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, client_generated_id)
);

-- Outcome events written in the handler's transaction; deleted once the broker confirmed them.
CREATE TABLE outbox (
    id          uuid        PRIMARY KEY,
    event_type  text        NOT NULL,
    body        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_created_at ON outbox (created_at);
