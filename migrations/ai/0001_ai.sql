-- depends: 0001_runtime_tables
-- What users asked the assistant, and what came of it. Both rows are written in the transaction
-- that made the chat call, so a committed prompt always has its response: an answer, or the
-- reason there is none.
CREATE TABLE prompts (
    prompt_id  uuid PRIMARY KEY,
    user_id    uuid        NOT NULL,
    prompt     text        NOT NULL CHECK (length(prompt) BETWEEN 1 AND 8000),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE responses (
    prompt_id      uuid PRIMARY KEY REFERENCES prompts ON DELETE CASCADE,
    status         text        NOT NULL CHECK (status IN ('answered', 'failed')),
    answer         text,
    model          text,
    finish_reason  text,
    failure_reason text,
    -- clock_timestamp(): now() is the transaction's start, before the chat call
    responded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((status = 'answered') = (answer IS NOT NULL AND model IS NOT NULL)),
    CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
);
