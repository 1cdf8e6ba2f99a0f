"""Video worker, read side: who may see a feed, and the pages the app shows (answered off video.queries).

A feed is public unless its owner set a passcode (feed.visibility.changed, from the settings
worker). A passcode feed is readable by its owner, and by a viewer whose access token (minted
by the settings worker) verifies, names this viewer and feed, and carries the feed's current
passcode version. Comments and likes come without a token: the grant the settings worker
announced (feed.access.granted) stands in for it.
"""
from __future__ import annotations

import functools
import uuid

from shared.envelope import rfc3339
from shared.errors import Forbidden, NotFound, Unauthorized
from shared.feedtokens import FeedTokenConfig, FeedTokenVerifier
from workers.runtime.handler import Context, Request
from shared.paging import page
from workers.runtime.storage import process_storage

# Newest passcode_version wins: the settings worker bumps it with every accepted change.
_VISIBILITY_WINS = """
ON CONFLICT (owner_id) DO UPDATE SET
    mode = EXCLUDED.mode, passcode_version = EXCLUDED.passcode_version, updated_at = now()
WHERE f.passcode_version < EXCLUDED.passcode_version
"""
UPSERT_VISIBILITY = f"""
INSERT INTO feed_visibility AS f (owner_id, mode, passcode_version) VALUES (%s::uuid, %s, %s::integer)
{_VISIBILITY_WINS}"""
UPSERT_VISIBILITY_ROWS = f"""
INSERT INTO feed_visibility AS f (owner_id, mode, passcode_version)
SELECT DISTINCT ON (owner_id) * FROM (
    SELECT (r->>0)::uuid, r->>1, (r->>2)::integer FROM jsonb_array_elements(%s::jsonb) AS r
) AS v (owner_id, mode, passcode_version)
ORDER BY owner_id, passcode_version DESC
{_VISIBILITY_WINS}"""

_GRANT_WINS = """
ON CONFLICT (viewer_id, owner_id) DO UPDATE SET
    passcode_version = EXCLUDED.passcode_version, expires_at = EXCLUDED.expires_at
WHERE (g.passcode_version, g.expires_at) < (EXCLUDED.passcode_version, EXCLUDED.expires_at)
"""
RECORD_GRANT = f"""
INSERT INTO feed_access_grants AS g (viewer_id, owner_id, passcode_version, expires_at)
VALUES (%s::uuid, %s::uuid, %s::integer, %s::timestamptz)
{_GRANT_WINS}"""
RECORD_GRANT_ROWS = f"""
INSERT INTO feed_access_grants AS g (viewer_id, owner_id, passcode_version, expires_at)
SELECT DISTINCT ON (viewer_id, owner_id) * FROM (
    SELECT (r->>0)::uuid, (r->>1)::uuid, (r->>2)::integer, (r->>3)::timestamptz
    FROM jsonb_array_elements(%s::jsonb) AS r
) AS v (viewer_id, owner_id, passcode_version, expires_at)
ORDER BY viewer_id, owner_id, passcode_version DESC, expires_at DESC
{_GRANT_WINS}"""

# Both are newest-wins upserts: a round trip's rows go as one statement (WorkerSpec.batched).
BATCHED = {UPSERT_VISIBILITY: UPSERT_VISIBILITY_ROWS, RECORD_GRANT: RECORD_GRANT_ROWS}

FEED_MODE = "SELECT mode, passcode_version FROM feed_visibility WHERE owner_id = %s"

HAS_GRANT = """
SELECT 1 FROM feed_access_grants
WHERE viewer_id = %s AND owner_id = %s AND passcode_version = %s AND expires_at > now()
"""

# Newest first; (created_at, post_id) orders every post, so a cursor holds its place while new
# posts arrive at the top.
FEED_PAGE = """
SELECT p.post_id::text, p.video_id::text, p.caption, p.like_count, p.comment_count, p.created_at,
       m.duration_s, m.width, m.height, m.renditions, m.thumbnail_key
FROM feed_posts p JOIN media_metadata m ON m.video_id = p.video_id
WHERE p.owner_id = %(owner)s {after}
ORDER BY p.created_at DESC, p.post_id DESC
LIMIT %(limit)s
"""
AFTER_POST = "AND (p.created_at, p.post_id) < (%(ts)s, %(id)s)"

POST_OWNER = "SELECT owner_id::text FROM feed_posts WHERE post_id = %s"

# Threads oldest first, by their top-level comment; replies come whole with their thread. seq
# (0004_comment_order) is drawn at each insert: created_at is the transaction start, shared by a
# whole batch, and comment_id is the client's pick, so neither orders a reply after its parent.
THREAD_PAGE = """
SELECT comment_id::text, author_id::text, body, like_count, deleted_at IS NOT NULL, created_at
FROM comments
WHERE post_id = %(post)s AND parent_comment_id IS NULL {after}
ORDER BY seq
LIMIT %(limit)s
"""
# The cursor (shared.paging) names the last thread shown, and the page goes on after its seq: the
# same cursors as when threads were ordered by (created_at, comment_id). One that names no thread
# of this post gives an empty page.
AFTER_THREAD = """AND seq > (SELECT seq FROM comments
                 WHERE comment_id = %(id)s AND post_id = %(post)s AND parent_comment_id IS NULL)"""

# A reply is inserted after its parent, so its seq is larger: cut at the LIMIT, the replies kept
# still have their parents.
REPLIES = """
WITH RECURSIVE thread AS (
    SELECT c.* FROM comments c WHERE c.parent_comment_id = ANY(%s::uuid[])
    UNION ALL
    SELECT c.* FROM comments c JOIN thread t ON c.parent_comment_id = t.comment_id
)
SELECT comment_id::text, author_id::text, body, like_count, deleted_at IS NOT NULL, created_at,
       parent_comment_id::text
FROM thread ORDER BY seq LIMIT %s
"""
MAX_REPLIES_PER_PAGE = 2000


@functools.cache
def verifier() -> FeedTokenVerifier:
    return FeedTokenVerifier(FeedTokenConfig.from_env())


def check_keys() -> None:
    """At start: refuse to run without the key that checks feed access tokens."""
    verifier()


# ---- who may see a feed ---------------------------------------------------------------------

def check_feed_access(cur, viewer: str, owner: str, token: str | None) -> None:
    """Raise Forbidden (no or wrong token) or Unauthorized (a token that does not verify)."""
    if viewer == owner:
        return
    cur.execute(FEED_MODE, (owner,))
    row = cur.fetchone()
    if row is None or row[0] == "public":
        return
    if not token:
        raise Forbidden("this feed is protected by a passcode: send a feed access token in X-Feed-Access-Token")
    grant = verifier().verify(token)
    if grant.viewer_id != viewer:
        raise Forbidden("this feed access token was issued to another user")
    if grant.feed_owner_id != owner:
        raise Forbidden("this feed access token is for another feed")
    if grant.passcode_version != row[1]:
        raise Unauthorized("the feed's passcode changed after this token was issued: enter it again")


def can_view(cur, viewer: str, owner: str) -> bool:
    """For comments and likes, which carry no token: the owner, a public feed, or a live grant."""
    if viewer == owner:
        return True
    cur.execute(FEED_MODE, (owner,))
    row = cur.fetchone()
    if row is None or row[0] == "public":
        return True
    cur.execute(HAS_GRANT, (viewer, owner, row[1]))
    return cur.fetchone() is not None


def record_visibility(ctx: Context, event) -> None:
    data = event.data
    ctx.cursor.execute(UPSERT_VISIBILITY, (data["owner_id"], data["mode"], data["passcode_version"]))


def record_grant(ctx: Context, event) -> None:
    data = event.data
    ctx.cursor.execute(RECORD_GRANT, (data["viewer_id"], data["feed_owner_id"], data["passcode_version"],
                                      data["expires_at"]))


# ---- pages ----------------------------------------------------------------------------------

def read_feed(ctx: Context, request: Request) -> dict:
    params = request.params
    owner = str(uuid.UUID(params["owner_id"]))
    cur = ctx.cursor
    check_feed_access(cur, request.user_id, owner, params.get("access_token"))
    rows, next_cursor = page(cur, FEED_PAGE, AFTER_POST, {"owner": owner}, params)
    storage = process_storage()
    posts = []
    for post_id, video_id, caption, likes, comments, created_at, duration, width, height, renditions, thumb in rows:
        media = [{"url": storage.presigned_get(r["key"]), "content_type": r.get("content_type", "video/mp4"),
                  "width": r.get("width"), "height": r.get("height")} for r in renditions]
        posts.append({"post_id": post_id, "video_id": video_id, "owner_id": owner, "caption": caption,
                      "created_at": rfc3339(created_at), "like_count": likes, "comment_count": comments,
                      "duration_s": duration, "width": width, "height": height,
                      "video_url": media[0]["url"] if media else None, "renditions": media,
                      "thumbnail_url": storage.presigned_get(thumb)})
    return {"owner_id": owner, "posts": posts, "next_cursor": next_cursor,
            "urls_expire_in_s": storage.cfg.download_expiry_s}


def read_comments(ctx: Context, request: Request) -> dict:
    params = request.params
    post_id = str(uuid.UUID(params["post_id"]))
    cur = ctx.cursor
    cur.execute(POST_OWNER, (post_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"post {post_id} does not exist")
    check_feed_access(cur, request.user_id, row[0], params.get("access_token"))
    roots, next_cursor = page(cur, THREAD_PAGE, AFTER_THREAD, {"post": post_id}, params)
    threads = [_comment(*r) for r in roots]
    nodes = {c["comment_id"]: c for c in threads}
    if nodes:
        cur.execute(REPLIES, (list(nodes), MAX_REPLIES_PER_PAGE))
        replies = [(_comment(*fields), parent) for *fields, parent in cur.fetchall()]
        # every node first, then the links: the tree does not depend on the rows' order, and a
        # reply whose parent did not come back is left out (with its own replies), not a 502
        nodes.update((node["comment_id"], node) for node, _ in replies)
        for node, parent in replies:
            if parent in nodes:
                nodes[parent]["replies"].append(node)
    return {"post_id": post_id, "comments": threads, "next_cursor": next_cursor}


def _comment(comment_id, author_id, body, likes, deleted, created_at) -> dict:
    # a deleted comment keeps its place in the thread, not its words
    return {"comment_id": comment_id, "author_id": author_id, "body": None if deleted else body,
            "deleted": deleted, "like_count": likes, "created_at": rfc3339(created_at), "replies": []}
