-- depends: 0001_settings
-- Who may read a feed. The passcode is kept only as a slow salted hash (workers/passcodes.py);
-- passcode_version grows with every accepted change, and access tokens carry the version they
-- were issued for, so a change invalidates every token issued before it.
CREATE TABLE feed_visibility (
    owner_id         uuid PRIMARY KEY,
    mode             text    NOT NULL CHECK (mode IN ('public', 'passcode')),
    passcode_hash    text,
    passcode_version integer NOT NULL CHECK (passcode_version > 0),
    version          text COLLATE "C" NOT NULL,   -- "<timestamp>/<event id>" of the update it holds
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((mode = 'passcode') = (passcode_hash IS NOT NULL))
);

-- Passcode attempts per viewer and feed in a fixed window, counted before any hash is computed.
CREATE TABLE feed_access_limits (
    viewer_id    uuid        NOT NULL,
    owner_id     uuid        NOT NULL,
    window_start timestamptz NOT NULL,
    attempts     integer     NOT NULL,
    PRIMARY KEY (viewer_id, owner_id)
);
