"""Feed access control through the real ingress, settings and video workers, broker, database and S3:
passcodes, access tokens, reading a feed and its comments, attempt limits, and no passcode ever
written to a log or a queue."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from shared.envelope import rfc3339
from shared.feedtokens import generate_keypair
from tests.support import rabbit
from tests.support.db import query
from tests.support.events import event
from tests.support.feed_stack import EVENTS, Stack
from tests.support.http import call
from tests.support.processes import workers_cli
from tests.support.rabbit import wait_for
from tests.support.secrets import passcode


@pytest.fixture(scope="module")
def stack(feed_stack) -> Stack:
    """The module's one feed stack (tests/conftest.py feed_stack)."""
    return feed_stack


def seed_posts(stack: Stack, owner: str, count: int, start: datetime, with_media: bool = False) -> list[str]:
    """`count` processed videos on `owner`'s feed, one second apart from `start`; their post ids."""
    post_ids = []
    for i in range(count):
        video_id, post_id = str(uuid.uuid4()), str(uuid.uuid4())
        prefix = f"media/{owner}/{video_id}/"
        if with_media:
            stack.storage.client.put_object(Bucket=stack.env["S3_BUCKET"], Key=prefix + "thumb.jpg",
                                            Body=b"jpeg-" + video_id.encode(), ContentType="image/jpeg")
        renditions = json.dumps([{"key": prefix + "720p.mp4", "content_type": "video/mp4", "width": 1280,
                                  "height": 720, "size_bytes": 1000, "codec": "h264"}])
        query(stack.video_db, """
            WITH v AS (INSERT INTO videos (video_id, owner_id, status, source_key, filename, content_type,
                                           declared_size, caption)
                       VALUES (%(v)s, %(o)s, 'ready', %(src)s, 'clip.mp4', 'video/mp4', 1000, %(cap)s)),
                 m AS (INSERT INTO media_metadata (video_id, duration_s, width, height, renditions, thumbnail_key)
                       VALUES (%(v)s, 3.0, 1280, 720, %(r)s::jsonb, %(thumb)s))
            INSERT INTO feed_posts (post_id, owner_id, video_id, caption, created_at)
            VALUES (%(p)s, %(o)s, %(v)s, %(cap)s, %(at)s)""",
              {"v": video_id, "o": owner, "p": post_id, "src": f"uploads/{owner}/{video_id}/source",
               "cap": f"set {i}", "r": renditions, "thumb": prefix + "thumb.jpg",
               "at": start + timedelta(seconds=i)})
        post_ids.append(post_id)
    return post_ids


def users(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


# ---- passcodes and tokens -------------------------------------------------------------------

def test_passcode_feed_needs_the_right_passcode_and_a_current_token(stack):
    owner, stranger, other_owner = users(3)
    posts = seed_posts(stack, owner, 2, datetime.now(timezone.utc) - timedelta(hours=1), with_media=True)
    code, other_code = passcode(), passcode()
    # Given the owner protects the feed with a passcode
    assert stack.set_passcode(owner, code) == {"mode": "passcode", "passcode_version": 1}
    # A stranger without a token cannot read it
    status, body, _ = stack.feed(stranger, owner)
    assert (status, body["error"]) == (403, "forbidden")
    # A wrong passcode is denied
    status, body, _ = stack.attempt(stranger, owner, passcode())
    assert (status, body["error"]) == (403, "access_denied")
    # The right passcode gives a 24 h token, and the token opens the feed
    status, body, _ = stack.attempt(stranger, owner, code)
    assert status == 200 and body["result"]["result"] == "granted", body
    token = body["result"]["access_token"]
    expires = datetime.fromisoformat(body["result"]["expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23, minutes=59) < expires - datetime.now(timezone.utc) <= timedelta(hours=24)
    status, page, _ = stack.feed(stranger, owner, token)
    assert status == 200, page
    assert [p["post_id"] for p in page["posts"]] == posts[::-1]  # newest first
    newest = page["posts"][0]
    assert newest["caption"] == "set 1" and newest["like_count"] == 0 and newest["comment_count"] == 0
    # the thumbnail link is a working, signed download of the stored object
    with urllib.request.urlopen(newest["thumbnail_url"], timeout=10) as response:
        assert response.read() == b"jpeg-" + newest["video_id"].encode()
    assert "X-Amz-Signature=" in newest["video_url"]
    # The owner reads their own feed without a token
    assert stack.feed(owner, owner)[0] == 200
    # A token for this feed does not open another passcode feed
    stack.set_passcode(other_owner, other_code)
    status, body, _ = stack.feed(stranger, other_owner, token)
    assert (status, body["error"]) == (403, "forbidden")
    # When the owner changes the passcode, the old token stops working
    new_code = passcode()
    assert stack.set_passcode(owner, new_code)["passcode_version"] == 2
    status, body, _ = stack.feed(stranger, owner, token)
    assert (status, body["error"]) == (401, "unauthorized")
    assert stack.feed(stranger, owner, stack.access_token(stranger, owner, new_code))[0] == 200
    # The settings database holds a slow salted hash, never the passcode
    (stored,), = query(stack.settings_db, "SELECT passcode_hash FROM feed_visibility WHERE owner_id = %s", (owner,))
    assert stored.startswith("scrypt$") and new_code not in stored


def test_forged_expired_or_edited_tokens_are_refused_401(stack):
    owner, viewer = users(2)
    code = passcode()
    stack.set_passcode(owner, code)
    good = stack.access_token(viewer, owner, code)
    assert stack.feed(viewer, owner, good)[0] == 200
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    private, public = stack.feed_keys

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def hs256_with_public_key(claims) -> str:  # the classic algorithm-confusion forgery
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
        return head + "." + b64(hmac.new(public.encode(), head.encode(), hashlib.sha256).digest())

    other_private, _ = generate_keypair()
    now = int(time.time())
    forged = {
        "expired": jwt.encode({**claims, "iat": now - 90000, "exp": now - 3600}, private, algorithm="EdDSA"),
        "alg none": b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + payload + ".",
        "another key": jwt.encode(claims, other_private, algorithm="EdDSA"),
        "another algorithm": hs256_with_public_key(claims),
        "edited claims": header + "." + b64(json.dumps({**claims, "passcode_version": 7}).encode()) + "." + signature,
        "wrong audience": jwt.encode({**claims, "aud": "someone-else"}, private, algorithm="EdDSA"),
        "no issuer": jwt.encode({k: v for k, v in claims.items() if k != "iss"}, private, algorithm="EdDSA"),
        "garbage": "not-a-token",
    }
    for what, token in forged.items():
        status, body, _ = stack.feed(viewer, owner, token)
        assert (status, body["error"]) == (401, "unauthorized"), what


def test_sixth_wrong_attempt_is_429_and_computes_no_hash(stack):
    owner, viewer = users(2)
    code = passcode()
    stack.set_passcode(owner, code)
    for _ in range(5):
        assert stack.attempt(viewer, owner, passcode())[0] == 403
    status, body, headers = stack.attempt(viewer, owner, passcode())
    assert (status, body["error"]) == (429, "rate_limited")
    assert 0 < int(headers["Retry-After"]) <= 900
    # even the right passcode waits for the window: the limit comes before any hash
    assert stack.attempt(viewer, owner, code)[0] == 429
    attempts = [l for l in stack.logs("settings")
                if l.get("msg") == "feed access attempt" and l.get("user_id") == viewer]
    assert [(l["outcome"], l["passcode_checked"]) for l in attempts] == \
        [("denied", True)] * 5 + [("rate_limited", False)] * 2
    # another viewer of the same feed is not held back by this one
    assert stack.attempt(str(uuid.uuid4()), owner, code)[0] == 200


def test_a_change_dated_in_the_future_does_not_pin_the_old_passcode(stack):
    """A phone whose clock runs fast sets a passcode; a later rotation and a switch back to public
    from a correct clock both take effect, and the old passcode and its tokens stop working."""
    owner, viewer = users(2)
    old, new = passcode(), passcode()
    future = rfc3339(datetime.now(timezone.utc) + timedelta(seconds=240))
    status, body, _ = call(stack.port, "POST", EVENTS, stack.token(owner), event(
        "feed.visibility.updated", data={"mode": "passcode", "passcode": old}, user_id=owner, timestamp=future))
    assert status == 200, body
    old_token = stack.access_token(viewer, owner, old)
    rotated = stack.set_passcode(owner, new)
    assert rotated["passcode_version"] == body["result"]["passcode_version"] + 1 and "superseded" not in rotated
    assert stack.attempt(viewer, owner, old)[0] == 403
    assert stack.feed(viewer, owner, old_token)[0] == 401
    assert stack.attempt(viewer, owner, new)[0] == 200
    assert stack.set_passcode(owner, None)["mode"] == "public"
    assert stack.feed(viewer, owner)[0] == 200


def test_a_passcode_shorter_than_six_characters_is_refused_at_the_ingress(stack):
    owner = users(1)[0]
    status, body, _ = stack.post(owner, "feed.visibility.updated", {"mode": "passcode", "passcode": "12345"})
    assert (status, body["error"], body.get("field")) == (422, "schema_violation", "data.passcode")
    assert query(stack.settings_db, "SELECT count(*) FROM feed_visibility WHERE owner_id = %s", (owner,)) == [(0,)]


def test_rotating_accounts_cannot_brute_force_a_feed_and_its_owner_is_told(stack):
    """Nine accounts guessing a PIN: the feed takes 20 wrong passcodes in a window, from anyone."""
    owner, honest = users(2)
    code = passcode()
    stack.set_passcode(owner, code)
    client = rabbit.Rabbit(stack.env["RABBITMQ_URL"])
    try:
        tap = client.tap("app.events", "feed.access.locked")
        answers = [stack.attempt(attacker, owner, f"{guess:06d}")[0]
                   for attacker in users(9) for guess in range(5)]
        assert answers[:20] == [403] * 20 and set(answers[20:]) == {429}
        # the price, stated in docs/reference.md (Security): an honest viewer waits for the window too
        status, body, headers = stack.attempt(honest, owner, code)
        assert (status, body["error"]) == (429, "rate_limited") and 0 < int(headers["Retry-After"]) <= 900
        locked = wait_for(lambda: client.drain(tap), message="feed.access.locked")
    finally:
        client.close()
    assert len(locked) == 1
    announced = json.loads(locked[0][1])
    assert announced["user_id"] == owner
    assert announced["data"]["feed_owner_id"] == owner and announced["data"]["failed_attempts"] == 20
    hashed = [l for l in stack.logs("settings") if l.get("msg") == "feed access attempt"
              and l.get("feed_owner_id") == owner and l.get("passcode_checked")]
    assert len(hashed) == 20  # no hash once the feed is locked


def test_one_account_rotating_feeds_is_capped_across_all_of_them(stack):
    viewer, *owners = users(7)
    for owner in owners:
        stack.set_passcode(owner, passcode())
    answers = [stack.attempt(viewer, owner, passcode())[0] for owner in owners for _ in range(4)]
    assert answers[:20] == [403] * 20 and answers[20:] == [429] * 4
    # the feeds themselves are not locked for others
    assert stack.attempt(str(uuid.uuid4()), owners[-1], passcode())[0] == 403


def test_an_owner_changes_visibility_at_most_ten_times_an_hour(stack):
    owner = users(1)[0]
    modes = [{"mode": "public"}, {"mode": "passcode", "passcode": passcode()}] * 6
    answers = [stack.post(owner, "feed.visibility.updated", data) for data in modes[:11]]
    assert [a[0] for a in answers] == [200] * 10 + [429]
    assert int(answers[-1][2]["Retry-After"]) > 0
    versions = query(stack.settings_db, "SELECT passcode_version FROM feed_visibility WHERE owner_id = %s", (owner,))
    assert versions == [(10,)]


def test_public_feed_is_readable_by_any_signed_in_user_and_not_without_a_token(stack):
    owner, reader = users(2)
    seed_posts(stack, owner, 3, datetime.now(timezone.utc) - timedelta(minutes=5))
    status, page, _ = stack.feed(reader, owner, limit=2)
    assert status == 200 and len(page["posts"]) == 2 and page["next_cursor"]
    status, body, _ = call(stack.port, "GET", f"/api/v1/feeds/{owner}/posts")
    assert (status, body["error"]) == (401, "unauthorized")
    # a public feed needs no passcode: an attempt says so
    status, body, _ = stack.attempt(reader, owner, passcode())
    assert status == 200 and body["result"]["result"] == "not_required"
    status, body, _ = stack.feed(reader, owner, limit=500)
    assert (status, body["field"]) == (400, "limit")
    status, body, _ = stack.feed(reader, owner, cursor="bm90LWEtY3Vyc29y")
    assert (status, body["error"]) == (400, "invalid")


def test_pagination_is_stable_while_new_posts_arrive(stack):
    owner, reader = users(2)
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    original = seed_posts(stack, owner, 25, start)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        status, page, _ = stack.feed(reader, owner, **params)
        assert status == 200, page
        seen += [p["post_id"] for p in page["posts"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
        # three new posts arrive between pages, newer than everything
        seed_posts(stack, owner, 3, datetime.now(timezone.utc) + timedelta(seconds=pages * 10))
    assert len(seen) == len(set(seen)), "a post was served twice"
    assert seen == original[::-1], "every original post, newest first, none missing"
    assert pages == 3


# ---- comments -------------------------------------------------------------------------------

def test_comments_come_threaded_and_follow_the_feed_access(stack):
    owner, fan, stranger = users(3)
    post_id, = seed_posts(stack, owner, 1, datetime.now(timezone.utc) - timedelta(minutes=1))
    root, reply, nested, second = (str(uuid.uuid4()) for _ in range(4))
    for comment_id, parent, body, author in ((root, None, "Great form", fan), (reply, root, "Thanks!", owner),
                                             (nested, reply, "How many sets?", fan),
                                             (second, None, "Nice", owner)):
        status, answer, _ = stack.post(author, "comment.created", {
            "comment_id": comment_id, "post_id": post_id, "body": body,
            **({"parent_comment_id": parent} if parent else {})})
        assert status == 202, answer
        wait_for(lambda: query(stack.video_db, "SELECT count(*) FROM comments WHERE comment_id = %s",
                               (comment_id,))[0][0] == 1, message="comment stored")
    status, page, _ = call(stack.port, "GET", f"/api/v1/posts/{post_id}/comments?limit=1", stack.token(stranger))
    assert status == 200, page
    (thread,) = page["comments"]
    assert (thread["comment_id"], thread["body"]) == (root, "Great form")
    assert [(r["comment_id"], [n["comment_id"] for n in r["replies"]]) for r in thread["replies"]] == [(reply, [nested])]
    status, page, _ = call(stack.port, "GET", f"/api/v1/posts/{post_id}/comments?limit=1&cursor={page['next_cursor']}",
                           stack.token(stranger))
    assert [c["comment_id"] for c in page["comments"]] == [second] and page["next_cursor"] is None
    # Once the feed has a passcode, a stranger can neither read nor add comments
    code = passcode()
    stack.set_passcode(owner, code)
    status, body, _ = call(stack.port, "GET", f"/api/v1/posts/{post_id}/comments", stack.token(stranger))
    assert (status, body["error"]) == (403, "forbidden")
    refused = str(uuid.uuid4())
    assert stack.post(stranger, "comment.created", {"comment_id": refused, "post_id": post_id, "body": "hi"})[0] == 202
    # ...until they give the passcode: the grant reaches the video worker, and the comment lands
    token = stack.access_token(stranger, owner, code)
    wait_for(lambda: query(stack.video_db, "SELECT count(*) FROM feed_access_grants WHERE viewer_id = %s",
                           (stranger,))[0][0] == 1, message="grant recorded")
    assert call(stack.port, "GET", f"/api/v1/posts/{post_id}/comments", stack.token(stranger),
                headers={"X-Feed-Access-Token": token})[0] == 200
    allowed = str(uuid.uuid4())
    assert stack.post(stranger, "comment.created", {"comment_id": allowed, "post_id": post_id, "body": "hi"})[0] == 202
    wait_for(lambda: query(stack.video_db, "SELECT count(*) FROM comments WHERE comment_id = %s",
                           (allowed,))[0][0] == 1, message="granted viewer's comment stored")
    assert query(stack.video_db, "SELECT count(*) FROM comments WHERE comment_id = %s", (refused,))[0][0] == 0
    dead = [l for l in stack.logs("video") if l.get("msg") == "event dead-lettered"
            and l.get("user_id") == stranger]
    assert [l["reason"] for l in dead] == ["forbidden"]


# ---- the query path itself ------------------------------------------------------------------

def test_attempts_travel_alone_and_a_missing_answer_is_504(stack):
    owner, viewer = users(2)
    code = passcode()
    batch = [event("feed.access.attempt", data={"feed_owner_id": owner, "passcode": code}, user_id=viewer),
             event("app.settings.updated", data={"theme": "dark"}, user_id=viewer)]
    status, body, _ = call(stack.port, "POST", EVENTS, stack.token(viewer), batch)
    assert (status, body["error"]) == (422, "send_alone")
    # A feed whose worker does not answer (stopped): 504 after the bounded wait, and the
    # query does not linger in the queue once nobody waits for it
    video = stack.procs["video"]
    video.terminate()
    try:
        started = time.monotonic()
        status, body, _ = stack.feed(viewer, owner)
        assert (status, body["error"]) == (504, "timeout")
        assert time.monotonic() - started < 10
        client = rabbit.Rabbit(stack.env["RABBITMQ_URL"])
        try:
            wait_for(lambda: client.depth("video.queries") == 0, timeout=15, message="expired query dropped")
        finally:
            client.close()
    finally:
        stack.procs["video"] = workers_cli("run", "video", env=stack.env)
        wait_for(lambda: any(l.get("msg") == "answering queries" for l in stack.logs("video")),
                 message="video answering queries again")
    assert stack.feed(viewer, owner)[0] == 200
