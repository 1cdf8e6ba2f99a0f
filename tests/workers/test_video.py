"""Video worker on the real broker, database and S3 server: uploads checked whatever storage let
through, processed videos as feed posts, comments and likes that count once."""
from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from shared.envelope import outcome_id
from tests.support.bus import dead_letters, outcomes, publish
from tests.support.db import processed, query
from tests.support.media import seed_post
from tests.support.rabbit import wait_for
from tests.support.uploads import post_form


# ---- helpers ----------------------------------------------------------------------------------

@pytest.fixture
def video_worker(start_worker, make_database, s3_env):
    """start() → the database of a running video worker (extra env: e.g. MAX_UPLOAD_BYTES)."""
    def start(**env) -> str:
        db = make_database("video")
        proc = start_worker("video", VIDEO_DATABASE_URL=db, **s3_env, **env)
        wait_for(lambda: any(l.get("msg") == "consuming" for l in proc.logs()), message="video worker consuming")
        return db
    return start


def status(db, video_id: str) -> tuple:
    return query(db, "SELECT status, failure_reason FROM videos WHERE video_id = %s", (video_id,))[0]


def request_upload(rmq, user: str, video_id: str, content_type="video/mp4", size=500, caption=None) -> dict:
    """media.upload_requested as the ingress sends it (request–reply); returns the worker's answer."""
    reply_to = rmq.channel.queue_declare("", exclusive=True).method.queue
    data = {"video_id": video_id, "filename": "leg day.mp4", "content_type": content_type, "size_bytes": size}
    if caption is not None:
        data["caption"] = caption
    sent = publish(rmq, "media.upload_requested", data, user, props={"reply_to": reply_to, "correlation_id": str(uuid.uuid4())})
    (answer,) = outcomes(rmq, reply_to)
    assert set(answer) <= {"status", "result", "error", "detail", "field", "retry_after_s"}  # shared/replies.py
    return {**(answer.pop("result", None) or {}), **answer, "event": sent}


def put_directly(storage, key: str, body: bytes, content_type: str) -> None:
    """An object put with the storage credentials, bypassing every condition of the form."""
    storage.client.put_object(Bucket=storage.cfg.bucket, Key=key, Body=body, ContentType=content_type)


def user() -> str:
    return str(uuid.uuid4())


# ---- uploads ----------------------------------------------------------------------------------

def test_upload_request_answers_with_a_form_and_the_completed_upload_is_verified(video_worker, rmq, storage):
    db = video_worker()
    issued, verified = rmq.tap("app.events", "media.upload_url.issued"), rmq.tap("app.events", "media.upload.verified")
    owner, video_id = user(), str(uuid.uuid4())
    key = f"uploads/{owner}/{video_id}/source"
    # Given the app asks for an upload
    reply = request_upload(rmq, owner, video_id.upper(), caption="Leg day")
    # Then the answer is a form for a key the server chose, and the same answer is emitted
    assert reply["status"] == "ok", reply
    assert reply["video_id"] == video_id
    upload = reply["upload"]
    assert upload["method"] == "POST" and upload["fields"]["key"] == key
    assert upload["fields"]["Content-Type"] == "video/mp4"
    assert upload["max_bytes"] == 500 * 1024 * 1024
    (announced,) = outcomes(rmq, issued)
    assert announced["data"] == {"video_id": video_id, "upload": upload}
    assert announced["user_id"] == owner
    assert query(db, "SELECT owner_id::text, status, source_key, caption FROM videos") == [
        (owner, "pending_upload", key, "Leg day")]
    # When the file goes up with the form, and the app says it is complete
    clip = b"\x00\x00\x00\x18ftypmp42" + bytes(300)
    assert post_form(upload, clip)[0] in (200, 201, 204)
    publish(rmq, "media.uploaded", {"video_id": video_id}, owner)
    # Then the video is uploaded and the transcode worker is told where the checked object is
    (ready,) = outcomes(rmq, verified)
    assert ready["user_id"] == owner
    assert ready["data"] == {"video_id": video_id, "key": key, "size_bytes": len(clip), "content_type": "video/mp4"}
    assert status(db, video_id) == ("uploaded", None)


def test_an_upload_over_the_size_limit_is_refused_by_storage_and_by_completion(video_worker, rmq, storage):
    db = video_worker(MAX_UPLOAD_BYTES=1000)
    failed = rmq.tap("app.events", "media.failed")
    owner, by_form, by_hand = user(), str(uuid.uuid4()), str(uuid.uuid4())
    # Given a form, whose size range ends at the configured maximum
    upload = request_upload(rmq, owner, by_form)["upload"]
    assert upload["max_bytes"] == 1000
    # When a larger file is posted with it, storage refuses it
    assert post_form(upload, bytes(2000))[0] == 400
    assert storage.head(upload["fields"]["key"]) is None
    # and completing then fails the video
    publish(rmq, "media.uploaded", {"video_id": by_form}, owner)
    (first,) = outcomes(rmq, failed)
    assert first["data"]["code"] == "source_missing"
    assert status(db, by_form)[0] == "failed"
    # When an oversized object lands anyway (a store that does not enforce the policy)
    request_upload(rmq, owner, by_hand)
    key = f"uploads/{owner}/{by_hand}/source"
    put_directly(storage, key, bytes(2000), "video/mp4")
    publish(rmq, "media.uploaded", {"video_id": by_hand}, owner)
    # Then completion fails the video and deletes the object
    (second,) = outcomes(rmq, failed)
    assert second["data"]["video_id"] == by_hand and "larger than the limit" in second["data"]["reason"]
    assert status(db, by_hand) == ("failed", second["data"]["reason"])
    assert storage.list(f"uploads/{owner}/") == []
    # And a request declaring more than the maximum gets no form
    refused = request_upload(rmq, owner, str(uuid.uuid4()), size=1001)
    assert refused["status"] == "error" and refused["field"] == "data.size_bytes"


def test_another_content_type_is_refused_by_storage_and_by_completion(video_worker, rmq, storage):
    db = video_worker()
    failed = rmq.tap("app.events", "media.failed")
    owner, by_form, by_hand = user(), str(uuid.uuid4()), str(uuid.uuid4())
    # Given a form bound to video/mp4
    upload = request_upload(rmq, owner, by_form)["upload"]
    # When the file is posted as text/plain, storage refuses it
    status_code, _ = post_form(upload, b"not a video", content_type="text/plain", override={"Content-Type": "text/plain"})
    assert status_code == 403
    assert storage.head(upload["fields"]["key"]) is None
    # When such an object lands anyway and the app completes
    request_upload(rmq, owner, by_hand)
    put_directly(storage, f"uploads/{owner}/{by_hand}/source", b"#EXTM3U\n", "text/plain")
    publish(rmq, "media.uploaded", {"video_id": by_hand}, owner)
    # Then the video fails with a reason and the object is gone
    (failure,) = outcomes(rmq, failed)
    assert failure["data"]["video_id"] == by_hand
    assert "text/plain" in failure["data"]["reason"]
    assert status(db, by_hand)[0] == "failed"
    assert storage.list(f"uploads/{owner}/{by_hand}/") == []


def test_an_expired_or_tampered_form_is_refused_by_storage(video_worker, rmq, storage):
    video_worker(UPLOAD_URL_EXPIRY_S="2")
    owner = user()
    upload = request_upload(rmq, owner, str(uuid.uuid4()))["upload"]
    signature = upload["fields"]["x-amz-signature"]
    # a forged signature, and a policy rewritten to allow more bytes, are refused
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert post_form(upload, b"x" * 100, override={"x-amz-signature": forged})[0] == 403
    policy = json.loads(base64.b64decode(upload["fields"]["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if not (isinstance(c, list) and c[0] == "content-length-range")]
    raised = base64.b64encode(json.dumps(policy).encode()).decode()
    assert post_form(upload, b"x" * 100, override={"policy": raised})[0] == 403
    # once the short expiry has passed, the untouched form is refused too
    time.sleep(3)
    assert post_form(upload, b"x" * 100)[0] == 403
    assert storage.head(upload["fields"]["key"]) is None


def test_someone_elses_video_can_be_neither_completed_nor_requested(video_worker, rmq, storage):
    db = video_worker()
    verified = rmq.tap("app.events", "media.upload.verified")
    owner, stranger, video_id = user(), user(), str(uuid.uuid4())
    # Given the owner's uploaded file
    upload = request_upload(rmq, owner, video_id)["upload"]
    assert post_form(upload, bytes(100))[0] in (200, 201, 204)
    # When someone else completes it, then asks for a form for the same video_id
    completion = publish(rmq, "media.uploaded", {"video_id": video_id}, stranger)
    takeover = request_upload(rmq, stranger, video_id)
    # Then both are refused as forbidden, and nothing changed
    assert takeover["status"] == "error" and takeover["error"] == "forbidden"
    dead = dead_letters(rmq, "video", 2)
    assert dead[completion["client_generated_id"]]["x-dead-reason"] == "forbidden"
    assert dead[takeover["event"]["client_generated_id"]]["x-dead-reason"] == "forbidden"
    assert status(db, video_id) == ("pending_upload", None)
    assert query(db, "SELECT owner_id::text FROM videos") == [(owner,)]
    assert storage.head(upload["fields"]["key"])["size"] == 100
    assert rmq.depth(verified) == 0
    # And completing an unknown video is refused as not found
    unknown = publish(rmq, "media.uploaded", {"video_id": str(uuid.uuid4())}, owner)
    assert dead_letters(rmq, "video", 1)[unknown["client_generated_id"]]["x-dead-reason"] == "not_found"


# ---- processing outcomes -------------------------------------------------------------------------

def test_a_processed_video_becomes_one_feed_post_and_a_failed_one_is_marked(video_worker, rmq):
    db = video_worker()
    created = rmq.tap("app.events", "feed.post.created")
    owner, video_id, broken = user(), str(uuid.uuid4()), str(uuid.uuid4())
    for vid, caption in ((video_id, "Leg day"), (broken, None)):
        query(db, "INSERT INTO videos (video_id, owner_id, status, source_key, filename, content_type, declared_size, "
                  "caption) VALUES (%s, %s, 'uploaded', %s, 'a.mp4', 'video/mp4', 10, %s)",
              (vid, owner, f"uploads/{owner}/{vid}/source", caption))
    prefix = f"media/{owner}/{video_id}"
    data = {"video_id": video_id, "thumbnail_key": f"{prefix}/thumb.jpg", "duration_s": 3.0, "width": 640,
            "height": 360, "renditions": [{"key": f"{prefix}/720p.mp4", "content_type": "video/mp4", "width": 640,
                                           "height": 360, "size_bytes": 12345, "codec": "h264"}]}
    # When the transcode worker reports it processed, twice (a redone job), and the other one failed
    first = publish(rmq, "media.processed", data, owner)
    again = publish(rmq, "media.processed", data, owner)
    failed = publish(rmq, "media.failed", {"video_id": broken, "reason": "This file is not a video.",
                                           "code": "not_a_video"}, owner)
    processed(db, first, again, failed)
    # Then one post with the upload's caption, and its outcome event
    post_id = str(outcome_id(video_id, "feed.post.created"))
    assert query(db, "SELECT post_id::text, owner_id::text, caption FROM feed_posts") == [(post_id, owner, "Leg day")]
    assert status(db, video_id) == ("ready", None)
    assert query(db, "SELECT thumbnail_key, renditions->0->>'key' FROM media_metadata") == [
        (f"{prefix}/thumb.jpg", f"{prefix}/720p.mp4")]
    (post,) = outcomes(rmq, created)
    assert post["user_id"] == owner
    assert {k: v for k, v in post["data"].items() if k != "created_at"} == {
        "post_id": post_id, "video_id": video_id, "owner_id": owner, "caption": "Leg day"}
    # And the failed video carries the reason its owner will read
    assert status(db, broken) == ("failed", "This file is not a video.")


# ---- comments and likes ------------------------------------------------------------------------

def test_a_reply_must_be_on_the_same_post_as_its_parent(video_worker, rmq):
    db = video_worker()
    persisted = rmq.tap("app.events", "comment.persisted")
    owner, author = user(), user()
    post, other_post = seed_post(db, owner), seed_post(db, owner)
    parent = str(uuid.uuid4())
    # Given a comment on a post
    comment = publish(rmq, "comment.created", {"comment_id": parent, "post_id": post, "body": "Nice form!"}, author)
    processed(db, comment)
    # When someone replies to it on another post, then on the same post
    stray = publish(rmq, "comment.created", {"comment_id": str(uuid.uuid4()), "post_id": other_post,
                                             "parent_comment_id": parent, "body": "??"}, owner)
    reply_id = str(uuid.uuid4())
    reply = publish(rmq, "comment.created", {"comment_id": reply_id, "post_id": post,
                                             "parent_comment_id": parent, "body": "Thanks"}, owner)
    # Then the stray reply is refused and the other one is threaded under its parent
    headers = dead_letters(rmq, "video", 1)[stray["client_generated_id"]]
    assert headers["x-dead-reason"] == "invalid" and "another post" in headers["x-dead-detail"]
    processed(db, reply)
    assert query(db, "SELECT comment_id::text, parent_comment_id::text FROM comments ORDER BY created_at") == [
        (parent, None), (reply_id, parent)]
    assert query(db, "SELECT post_id::text, comment_count FROM feed_posts ORDER BY comment_count DESC") == [
        (post, 2), (other_post, 0)]
    events = {e["data"]["comment_id"]: e for e in outcomes(rmq, persisted, 2)}
    assert events[reply_id]["data"]["parent_comment_id"] == parent
    assert events[parent]["data"]["author_id"] == author and events[parent]["data"]["body"] == "Nice form!"
    # the post's owner is named, for their inbox (workers/notify/worker.py)
    assert {e["data"]["post_owner_id"] for e in events.values()} == {owner}
    # And a comment on a post that does not exist is refused as not found
    orphan = publish(rmq, "comment.created", {"comment_id": str(uuid.uuid4()), "post_id": str(uuid.uuid4()),
                                              "body": "hello"}, author)
    assert dead_letters(rmq, "video", 1)[orphan["client_generated_id"]]["x-dead-reason"] == "not_found"


def test_only_the_author_deletes_a_comment_and_it_counts_off_once(video_worker, rmq):
    db = video_worker()
    owner, author = user(), user()
    post = seed_post(db, owner)
    comment_id = str(uuid.uuid4())
    processed(db, publish(rmq, "comment.created", {"comment_id": comment_id, "post_id": post, "body": "Mine"}, author))
    # When the post's owner tries to delete the comment
    attempt = publish(rmq, "comment.deleted", {"comment_id": comment_id}, owner)
    # Then it is refused and the comment stays
    assert dead_letters(rmq, "video", 1)[attempt["client_generated_id"]]["x-dead-reason"] == "forbidden"
    assert query(db, "SELECT body, deleted_at IS NULL FROM comments") == [("Mine", True)]
    # When the author deletes it, twice (two taps)
    deletions = [publish(rmq, "comment.deleted", {"comment_id": comment_id}, author) for _ in range(2)]
    processed(db, *deletions)
    # Then its text is gone, the row stays for the thread, and the count went down once
    assert query(db, "SELECT body, deleted_at IS NOT NULL FROM comments") == [("", True)]
    assert query(db, "SELECT comment_count FROM feed_posts") == [(0,)]
    assert rmq.depth("video.dead") == 0


def test_a_like_counts_once_per_user_and_an_unlike_takes_it_back(video_worker, rmq):
    db = video_worker()
    owner, fan, other = user(), user(), user()
    post = seed_post(db, owner)
    comment_id = str(uuid.uuid4())
    processed(db, publish(rmq, "comment.created", {"comment_id": comment_id, "post_id": post, "body": "Wow"}, owner))
    on_post, on_comment = {"target_type": "post", "target_id": post}, {"target_type": "comment", "target_id": comment_id}
    counts = lambda: query(db, "SELECT (SELECT like_count FROM feed_posts), (SELECT like_count FROM comments), "
                               "(SELECT count(*) FROM likes)")[0]
    # When a fan likes the post twice, and the comment once
    processed(db, *[publish(rmq, "interaction.liked", on_post, fan) for _ in range(2)],
              publish(rmq, "interaction.liked", on_comment, fan))
    # Then one like each
    assert counts() == (1, 1, 2)
    # When another user likes the post too, and the fan unlikes it twice
    processed(db, publish(rmq, "interaction.liked", on_post, other))
    processed(db, *[publish(rmq, "interaction.unliked", on_post, fan) for _ in range(2)])
    # Then only the other user's like is left on the post
    assert counts() == (1, 1, 2)
    assert query(db, "SELECT user_id::text FROM likes WHERE target_type = 'post'") == [(other,)]
    # And liking something that does not exist is refused
    ghost = publish(rmq, "interaction.liked", {"target_type": "comment", "target_id": str(uuid.uuid4())}, fan)
    assert dead_letters(rmq, "video", 1)[ghost["client_generated_id"]]["x-dead-reason"] == "not_found"


def test_like_counts_match_the_likes_under_two_replicas(video_worker, start_worker, s3_env, rmq):
    db = video_worker(PREFETCH=4)
    second = start_worker("video", VIDEO_DATABASE_URL=db, PREFETCH=4, **s3_env)
    wait_for(lambda: any(l.get("msg") == "consuming" for l in second.logs()), message="second replica consuming")
    owner = user()
    post = seed_post(db, owner)
    target = {"target_type": "post", "target_id": post}
    fans = [user() for _ in range(30)]
    # When thirty users like the post three times each and a third of them unlike it, all at once
    sent = [publish(rmq, "interaction.liked", target, fan) for fan in fans for _ in range(3)]
    sent += [publish(rmq, "interaction.unliked", target, fan) for fan in fans[::3]]
    processed(db, *sent)
    # Then whatever order the replicas took them in, the counter equals the likes stored
    (like_count, likes), = query(db, "SELECT like_count, (SELECT count(*) FROM likes) FROM feed_posts")
    assert like_count == likes
    assert 20 <= likes <= 30
