"""Video worker: uploads checked in storage, processed videos as feed posts, comments and likes.

Handlers that read before they write lock what they read (the video row) or let one statement
decide (INSERT … ON CONFLICT / UPDATE … WHERE … RETURNING), so counters stay right when several
replicas handle events of the same video, post or comment at once.
"""
from __future__ import annotations

import orjson

from shared.envelope import Envelope, canonical_id, outcome_id, rfc3339
from shared.errors import Forbidden, InvalidEvent, NotFound, PermanentError
from workers.runtime.handler import Context, Request, WorkerSpec
from shared.logging import log
from shared.config import MB
from workers.runtime.storage import process_storage
from workers.video import feed_reads
from workers.video.feed_reads import can_view
from workers.video.sql import (COMMENT_AUTHOR, CREATE_POST, DELETE_COMMENT, INSERT_COMMENT, LIKE, LOCK_VIDEO,
                               POST_AND_PARENT, REQUEST_UPLOAD, TARGET_EXISTS, TARGET_OWNER, UNLIKE)

# media.failed codes for what the completion check finds (shared/schemas/events/media.failed.json)
MISSING, EMPTY, TOO_LARGE, WRONG_TYPE = "source_missing", "not_a_video", "too_large", "content_type_mismatch"



def source_key(user_id: str, video_id: str) -> str:
    """Where the owner's upload goes: chosen here, never by the client, under the user's prefix."""
    return f"uploads/{user_id}/{video_id}/source"


# ---- uploads --------------------------------------------------------------------------------

def request_upload(ctx: Context, event: Envelope) -> dict:
    data = event.data
    video_id = canonical_id(data["video_id"])
    storage = process_storage()
    if data["size_bytes"] > storage.cfg.max_upload_bytes:
        raise InvalidEvent(f"size_bytes {data['size_bytes']} is over the upload limit of "
                           f"{storage.cfg.max_upload_bytes} bytes", field="data.size_bytes")
    key = source_key(event.user_id, video_id)
    cur = ctx.cursor
    # a re-request by the owner before the upload completes refreshes the row and gets a new form
    cur.execute(REQUEST_UPLOAD, {"video_id": video_id, "owner": event.user_id, "key": key,
                                 "filename": data["filename"], "content_type": data["content_type"],
                                 "size": data["size_bytes"], "caption": data.get("caption")})
    if cur.fetchone() is None:
        cur.execute("SELECT owner_id::text, status FROM videos WHERE video_id = %s", (video_id,))
        owner, status = cur.fetchone()
        if owner != event.user_id:
            raise Forbidden(f"video {video_id} belongs to another user")
        # a new form now could replace the object the transcode worker is about to read
        raise PermanentError(f"video {video_id} is already {status}; use a new video_id", reason="already_uploaded")
    # the form allows up to the configured maximum, not the declared size: the declaration is
    # the client's word, and the completion step checks the stored object anyway
    reply = {"video_id": video_id, "upload": storage.presigned_post(key, data["content_type"])}
    ctx.emit("media.upload_url.issued", reply, cause=event)
    return reply


def verify_upload(ctx: Context, event: Envelope) -> None:
    video_id = canonical_id(event.data["video_id"])
    cur = ctx.cursor
    # locked until commit: a second completion or a re-request waits and then sees our verdict
    status, key, declared_type, _ = _locked_video(cur, video_id, event.user_id)
    if status != "pending_upload":
        return  # completed before: the verdict stands
    storage = process_storage()
    stored = storage.head(key)
    problem = _upload_problem(stored, declared_type, storage.cfg.max_upload_bytes)
    if problem is None:
        cur.execute("UPDATE videos SET status = 'uploaded', updated_at = now() WHERE video_id = %s", (video_id,))
        ctx.emit("media.upload.verified", {"video_id": video_id, "key": key, "size_bytes": stored["size"],
                                           "content_type": declared_type}, cause=event)
        return
    code, reason = problem
    log.info("upload refused", worker="video", video_id=video_id, code=code, user_id=event.user_id,
             client_generated_id=event.id)
    cur.execute("UPDATE videos SET status = 'failed', failure_reason = %s, updated_at = now() "
                "WHERE video_id = %s", (reason, video_id))
    ctx.emit("media.failed", {"video_id": video_id, "reason": reason, "code": code}, cause=event)
    storage.delete(key)  # whatever storage let through must not stay in the bucket


def read_upload(ctx: Context, request: Request) -> dict:
    """The caller's own video (before /complete is queued); another user's reads as missing."""
    video_id = canonical_id(request.params["video_id"])
    cur = ctx.cursor
    cur.execute("SELECT status FROM videos WHERE video_id = %s AND owner_id = %s", (video_id, request.user_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"you have no video {video_id}: request an upload first")
    return {"video_id": video_id, "status": row[0]}


def _upload_problem(obj: dict | None, declared_type: str, max_bytes: int) -> tuple[str, str] | None:
    """(media.failed code, reason for the owner) when the stored object is not what was agreed."""
    if obj is None:
        return MISSING, "The upload did not arrive. Please upload the video again."
    if obj["size"] == 0:
        return EMPTY, "The uploaded file is empty."
    if obj["size"] > max_bytes:
        limit = f"{max_bytes // MB} MB" if max_bytes >= MB else f"{max_bytes} bytes"
        return TOO_LARGE, f"The uploaded file is larger than the limit of {limit}."
    stored_type = (obj["content_type"] or "").split(";", 1)[0].strip().lower()
    if stored_type != declared_type:
        return WRONG_TYPE, f"The file was uploaded as {stored_type[:50] or 'an unknown type'}, not {declared_type}."
    return None


def _locked_video(cur, video_id: str, user_id: str) -> tuple:
    """(status, source_key, content_type, caption) of the caller's own video, row-locked."""
    cur.execute(LOCK_VIDEO, (video_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"video {video_id} does not exist")
    if row[0] != user_id:
        raise Forbidden(f"video {video_id} belongs to another user")
    return row[1:]


# ---- processing outcomes --------------------------------------------------------------------

def publish_video(ctx: Context, event: Envelope) -> None:
    data = event.data
    video_id = canonical_id(data["video_id"])
    cur = ctx.cursor
    status, _, _, caption = _locked_video(cur, video_id, event.user_id)
    if status in ("ready", "failed"):
        return  # settled before
    if status == "pending_upload":
        raise PermanentError(f"video {video_id} was processed but never verified", reason="not_verified")
    prefix = f"media/{event.user_id}/{video_id}/"
    if not all(k.startswith(prefix) for k in [data["thumbnail_key"], *(r["key"] for r in data["renditions"])]):
        raise Forbidden(f"media keys of video {video_id} must lie under {prefix}")
    post_id = str(outcome_id(video_id, "feed.post.created"))  # one post per video, whoever replays
    cur.execute(CREATE_POST, {"video_id": video_id, "owner": event.user_id, "post_id": post_id, "caption": caption,
                              "duration_s": data["duration_s"], "width": data["width"], "height": data["height"],
                              "renditions": orjson.dumps(data["renditions"]).decode(), "thumbnail_key": data["thumbnail_key"]})
    created_at, = cur.fetchone()
    post = {"post_id": post_id, "video_id": video_id, "owner_id": event.user_id, "created_at": rfc3339(created_at)}
    if caption is not None:
        post["caption"] = caption
    ctx.emit("feed.post.created", post, cause=event)


def fail_video(ctx: Context, event: Envelope) -> None:
    video_id = canonical_id(event.data["video_id"])
    cur = ctx.cursor
    status, *_ = _locked_video(cur, video_id, event.user_id)
    # a post that exists stays; a failed video keeps its first reason (our own media.failed comes back here)
    if status in ("ready", "failed"):
        return
    cur.execute("UPDATE videos SET status = 'failed', failure_reason = %s, updated_at = now() WHERE video_id = %s",
                (event.data["reason"], video_id))


# ---- comments and likes ---------------------------------------------------------------------

def create_comment(ctx: Context, event: Envelope) -> None:
    data = event.data
    comment_id, post_id = canonical_id(data["comment_id"]), canonical_id(data["post_id"])
    parent_id = canonical_id(data["parent_comment_id"]) if data.get("parent_comment_id") else None
    cur = ctx.cursor
    cur.execute(POST_AND_PARENT, (parent_id, post_id))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"post {post_id} does not exist")
    owner, parent_post = row
    if not can_view(cur, event.user_id, owner):
        raise Forbidden(f"post {post_id} is not visible to this user")
    if parent_id and parent_post is None:
        raise NotFound(f"parent comment {parent_id} does not exist")
    if parent_id and parent_post != post_id:
        raise InvalidEvent("parent comment is on another post", field="data.parent_comment_id")
    cur.execute(INSERT_COMMENT, (comment_id, post_id, event.user_id, parent_id, data["body"]))
    row = cur.fetchone()
    if row is None:  # the comment_id is taken: the same comment sent again, or someone else's
        cur.execute(COMMENT_AUTHOR, (comment_id,))
        if cur.fetchone()[0] != event.user_id:
            raise Forbidden(f"comment {comment_id} belongs to another user")
        return
    ctx.emit("comment.persisted", {"comment_id": comment_id, "post_id": post_id, "post_owner_id": owner,
                                   "parent_comment_id": parent_id, "author_id": event.user_id, "body": data["body"],
                                   "created_at": rfc3339(row[0])}, cause=event)


def delete_comment(ctx: Context, event: Envelope) -> None:
    comment_id = canonical_id(event.data["comment_id"])
    cur = ctx.cursor
    # one statement decides: of two concurrent deletes only one sees deleted_at IS NULL
    cur.execute(DELETE_COMMENT, (comment_id, event.user_id))
    if cur.fetchone() is not None:
        return
    cur.execute(COMMENT_AUTHOR, (comment_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"comment {comment_id} does not exist")
    if row[0] != event.user_id:
        raise Forbidden(f"comment {comment_id} belongs to another user")
    # deleted before: nothing to do


def like_target(ctx: Context, event: Envelope) -> None:
    target_type, target_id = event.data["target_type"], canonical_id(event.data["target_id"])
    cur = ctx.cursor
    cur.execute(TARGET_OWNER[target_type], (target_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"{target_type} {target_id} does not exist")
    if not can_view(cur, event.user_id, row[0]):
        raise Forbidden(f"{target_type} {target_id} is not visible to this user")
    # the counter moves only if this like is new: a second like (or a replica racing us) inserts nothing
    cur.execute(LIKE[target_type], (event.user_id, target_id))


def unlike_target(ctx: Context, event: Envelope) -> None:
    target_type, target_id = event.data["target_type"], canonical_id(event.data["target_id"])
    cur = ctx.cursor
    # the counter moves only if a like was really removed
    cur.execute(UNLIKE[target_type], (event.user_id, target_id))
    if cur.fetchone() is not None:
        return
    cur.execute(TARGET_EXISTS[target_type], (target_id,))
    if cur.fetchone() is None:
        raise NotFound(f"{target_type} {target_id} does not exist")
    # not liked: nothing to take back


HANDLERS = {
    "media.upload_requested": request_upload,
    "media.uploaded": verify_upload,
    "media.processed": publish_video,
    "media.failed": fail_video,
    "comment.created": create_comment,
    "comment.deleted": delete_comment,
    "interaction.liked": like_target,
    "interaction.unliked": unlike_target,
    "feed.visibility.changed": feed_reads.record_visibility,
    "feed.access.granted": feed_reads.record_grant,
}

# Answered at once to a waiting caller, off video.queries.
QUERIES = {
    "video.upload.get": read_upload,
    "feed.posts": feed_reads.read_feed,
    "post.comments": feed_reads.read_comments,
}

WORKER = WorkerSpec(name="video", database="video", handlers=HANDLERS, queries=QUERIES,
                    startup=feed_reads.check_keys, description="uploads, feed posts, comments and likes, feed reads",
                    batched=feed_reads.BATCHED)
