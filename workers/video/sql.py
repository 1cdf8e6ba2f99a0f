"""The video worker's statements. Each write that moves a counter is one statement whose
RETURNING says whether the row really changed, so a replayed or concurrent event counts once."""
from __future__ import annotations

LOCK_VIDEO = """
SELECT owner_id::text, status, source_key, content_type, caption FROM videos WHERE video_id = %s FOR UPDATE
"""

# No row back: the video exists and is someone else's, or is past pending_upload.
REQUEST_UPLOAD = """
INSERT INTO videos AS v (video_id, owner_id, status, source_key, filename, content_type, declared_size, caption)
VALUES (%(video_id)s, %(owner)s, 'pending_upload', %(key)s, %(filename)s, %(content_type)s, %(size)s, %(caption)s)
ON CONFLICT (video_id) DO UPDATE SET
    filename = EXCLUDED.filename, content_type = EXCLUDED.content_type,
    declared_size = EXCLUDED.declared_size, caption = EXCLUDED.caption, updated_at = now()
WHERE v.owner_id = EXCLUDED.owner_id AND v.status = 'pending_upload'
RETURNING video_id
"""

# Runs under the video's row lock with the video not yet ready, so none of these rows exist.
CREATE_POST = """
WITH meta AS (
    INSERT INTO media_metadata (video_id, duration_s, width, height, renditions, thumbnail_key)
    VALUES (%(video_id)s, %(duration_s)s, %(width)s, %(height)s, %(renditions)s::jsonb, %(thumbnail_key)s)
), ready AS (
    UPDATE videos SET status = 'ready', failure_reason = NULL, updated_at = now() WHERE video_id = %(video_id)s
)
INSERT INTO feed_posts (post_id, owner_id, video_id, caption)
VALUES (%(post_id)s, %(owner)s, %(video_id)s, %(caption)s)
RETURNING created_at
"""

# The post's owner, and which post the parent comment (if any) is on.
POST_AND_PARENT = """
SELECT p.owner_id::text, (SELECT c.post_id::text FROM comments c WHERE c.comment_id = %s)
FROM feed_posts p WHERE p.post_id = %s
"""

# No row back: the comment_id exists already.
INSERT_COMMENT = """
WITH c AS (
    INSERT INTO comments (comment_id, post_id, author_id, parent_comment_id, body) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (comment_id) DO NOTHING
    RETURNING post_id, created_at
), counted AS (
    UPDATE feed_posts p SET comment_count = p.comment_count + 1 FROM c WHERE p.post_id = c.post_id
)
SELECT created_at FROM c
"""

COMMENT_AUTHOR = "SELECT author_id::text FROM comments WHERE comment_id = %s"

# The text goes, the row stays: replies keep their place in the thread. No row back: not
# deleted now (unknown, someone else's, or deleted before).
DELETE_COMMENT = """
WITH d AS (
    UPDATE comments SET deleted_at = now(), body = ''
    WHERE comment_id = %s AND author_id = %s AND deleted_at IS NULL
    RETURNING post_id
)
UPDATE feed_posts p SET comment_count = p.comment_count - 1 FROM d WHERE p.post_id = d.post_id
RETURNING p.post_id
"""

# Whose feed a like target is on; a deleted comment cannot be liked.
TARGET_OWNER = {
    "post": "SELECT owner_id::text FROM feed_posts WHERE post_id = %s",
    "comment": "SELECT p.owner_id::text FROM comments c JOIN feed_posts p ON p.post_id = c.post_id "
               "WHERE c.comment_id = %s AND c.deleted_at IS NULL",
}

# Unliking a deleted comment is fine: the row is still there.
TARGET_EXISTS = {
    "post": "SELECT 1 FROM feed_posts WHERE post_id = %s",
    "comment": "SELECT 1 FROM comments WHERE comment_id = %s",
}

_COUNTED = {"post": ("feed_posts", "post_id"), "comment": ("comments", "comment_id")}

LIKE = {target: f"""
WITH l AS (
    INSERT INTO likes (user_id, target_type, target_id) VALUES (%s, '{target}', %s)
    ON CONFLICT DO NOTHING
    RETURNING target_id
)
UPDATE {table} t SET like_count = t.like_count + 1 FROM l WHERE t.{key} = l.target_id
""" for target, (table, key) in _COUNTED.items()}

# A row back: a like was removed and counted off.
UNLIKE = {target: f"""
WITH l AS (
    DELETE FROM likes WHERE user_id = %s AND target_type = '{target}' AND target_id = %s
    RETURNING target_id
)
UPDATE {table} t SET like_count = t.like_count - 1 FROM l WHERE t.{key} = l.target_id
RETURNING t.{key}
""" for target, (table, key) in _COUNTED.items()}
