-- depends: 0002_comment_soft_delete
-- The video worker's copy of each feed's mode (from feed.visibility.changed), and the viewers
-- who gave the right passcode (from feed.access.granted), so comments and likes on a passcode
-- feed can be checked without the token, which never travels in an event.
CREATE TABLE feed_visibility (
    owner_id         uuid PRIMARY KEY,
    mode             text    NOT NULL CHECK (mode IN ('public', 'passcode')),
    passcode_version integer NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE feed_access_grants (
    viewer_id        uuid        NOT NULL,
    owner_id         uuid        NOT NULL,
    passcode_version integer     NOT NULL,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (viewer_id, owner_id)
);

-- a post's threads, oldest first: (created_at, comment_id) is the cursor
CREATE INDEX comments_post_threads ON comments (post_id, created_at, comment_id) WHERE parent_comment_id IS NULL;
CREATE INDEX comments_parent ON comments (parent_comment_id) WHERE parent_comment_id IS NOT NULL;
