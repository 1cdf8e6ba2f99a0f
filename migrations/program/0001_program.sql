-- depends: 0001_runtime_tables
-- Training plans (programs and their workouts) and the sessions users log, with their sets.

-- Every change of a plan locks its programs row first (SELECT … FOR UPDATE), so replicas take
-- turns on one plan: revision counts the accepted changes and positions never collide.
CREATE TABLE programs (
    program_id  uuid PRIMARY KEY,
    owner_id    uuid        NOT NULL,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
    description text        CHECK (length(description) <= 2000),
    revision    integer     NOT NULL DEFAULT 1 CHECK (revision >= 1),
    versions    jsonb       NOT NULL DEFAULT '{}',  -- field → version_key of the patch that set it
    deleted_at  timestamptz,                         -- kept, so the id stays its owner's
    created_at  timestamptz NOT NULL,                -- when the user created it (event timestamp)
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- newest first, stable under inserts: (created_at, program_id) is the cursor
CREATE INDEX programs_owner_newest ON programs (owner_id, created_at DESC, program_id DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE workouts (
    workout_id  uuid PRIMARY KEY,
    program_id  uuid        NOT NULL REFERENCES programs ON DELETE CASCADE,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
    day_of_week smallint    CHECK (day_of_week BETWEEN 1 AND 7),
    exercises   jsonb       NOT NULL DEFAULT '[]',  -- [{name, sets, reps, weight?}], replaced whole
    position    integer     NOT NULL CHECK (position >= 1),  -- max + 1 under the program's lock
    versions    jsonb       NOT NULL DEFAULT '{}',
    removed_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- the backstop: a change that slipped past the lock fails here instead of sharing a place
    UNIQUE (program_id, position)
);

CREATE TABLE workout_sessions (
    session_id   uuid PRIMARY KEY,
    owner_id     uuid        NOT NULL,
    program_id   uuid        REFERENCES programs,
    workout_id   uuid        REFERENCES workouts,
    started_at   timestamptz NOT NULL,  -- event timestamps: when the user did it
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workout_sessions_owner ON workout_sessions (owner_id, started_at DESC);

CREATE TABLE workout_sets (
    set_id       uuid PRIMARY KEY,
    session_id   uuid         NOT NULL REFERENCES workout_sessions ON DELETE CASCADE,
    owner_id     uuid         NOT NULL,
    exercise     text         NOT NULL CHECK (length(exercise) BETWEEN 1 AND 120),
    reps         integer      NOT NULL CHECK (reps BETWEEN 0 AND 1000),
    weight_value numeric(7,3) NOT NULL CHECK (weight_value BETWEEN 0 AND 2000),
    weight_unit  text         NOT NULL CHECK (weight_unit IN ('kg', 'lb')),
    logged_at    timestamptz  NOT NULL,  -- event timestamp: the order the user logged them in
    seq          bigint       GENERATED ALWAYS AS IDENTITY,  -- ties: arrival order
    created_at   timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX workout_sets_session ON workout_sets (session_id, logged_at, seq);
