-- depends: 0002_feed_access
-- Fixed-window counters beside feed_access_limits (per viewer and feed), so that rotating
-- accounts or feeds gains an attacker nothing:
--   scope 'feed'       failed passcode attempts against one feed, from any viewer
--   scope 'viewer'     failed passcode attempts by one viewer, against any feed
--   scope 'visibility' visibility changes by one owner (each one costs an scrypt hash)
CREATE TABLE access_limits (
    scope        text        NOT NULL CHECK (scope IN ('feed', 'viewer', 'visibility')),
    subject_id   uuid        NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer     NOT NULL,
    PRIMARY KEY (scope, subject_id)
);
