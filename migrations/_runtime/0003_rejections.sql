-- depends: 0002_idempotency_per_user
-- What the runtime dead-lettered for a reason the sender can act on, so that receipts
-- (`<worker>.receipts`) can answer `rejected` from here and `applied` from idempotency_keys.
-- Written on the dead-letter path only, never on the happy path; a later rejection of the same
-- event replaces the earlier one. `detail` is the human text of x-dead-detail (never SQL or a trace).
CREATE TABLE rejections (
    consumer            text        NOT NULL,
    user_id             uuid        NOT NULL,
    client_generated_id uuid        NOT NULL,
    event_type          text        NOT NULL,
    reason              text        NOT NULL,
    field               text        NULL,
    detail              text        NOT NULL,
    rejected_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, user_id, client_generated_id)
);
