-- depends: 0001_runtime_tables
-- Videos, their media, the feed, comments and likes (the video and transcode workers share this database).
CREATE TABLE videos (
    video_id      uuid PRIMARY KEY,
    owner_id      uuid        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('pending_upload', 'uploaded', 'processing', 'ready', 'failed')),
    source_key    text        NOT NULL UNIQUE,
    filename      text        NOT NULL,
    content_type  text        NOT NULL,
    declared_size bigint      NOT NULL CHECK (declared_size > 0),
    caption       text,
    failure_reason text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX videos_owner ON videos (owner_id, created_at DESC);

CREATE TABLE media_metadata (
    video_id      uuid PRIMARY KEY REFERENCES videos ON DELETE CASCADE,
    duration_s    double precision NOT NULL,
    width         integer NOT NULL,
    height        integer NOT NULL,
    renditions    jsonb   NOT NULL,   -- [{key, content_type, width, height, size_bytes, codec}]
    thumbnail_key text    NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE feed_posts (
    post_id       uuid PRIMARY KEY,
    owner_id      uuid        NOT NULL,
    video_id      uuid        NOT NULL UNIQUE REFERENCES videos,
    caption       text,
    like_count    integer     NOT NULL DEFAULT 0 CHECK (like_count >= 0),
    comment_count integer     NOT NULL DEFAULT 0 CHECK (comment_count >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- newest first, stable under inserts: (created_at, post_id) is the cursor
CREATE INDEX feed_posts_owner_newest ON feed_posts (owner_id, created_at DESC, post_id DESC);

CREATE TABLE comments (
    comment_id        uuid PRIMARY KEY,
    post_id           uuid        NOT NULL REFERENCES feed_posts,
    author_id         uuid        NOT NULL,
    parent_comment_id uuid        REFERENCES comments,
    body              text        NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
    like_count        integer     NOT NULL DEFAULT 0 CHECK (like_count >= 0),
    deleted_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX comments_post ON comments (post_id, created_at);

CREATE TABLE likes (
    user_id     uuid NOT NULL,
    target_type text NOT NULL CHECK (target_type IN ('post', 'comment')),
    target_id   uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, target_type, target_id)
);
CREATE INDEX likes_target ON likes (target_type, target_id);
