"""Comment pages read back as a well-formed tree whatever the comment ids, timestamps and batching:
comments committed in one worker transaction share created_at, and their ids are the client's
pick, so neither may decide whether a reply is seen before its parent."""
from __future__ import annotations

import base64
import random
import time
import types
import uuid
from datetime import datetime, timezone

import psycopg2
import pytest

from workers.runtime.handler import Request
from tests.support.bus import publish
from tests.support.db import processed, query
from tests.support.media import seed_post
from tests.support.events import event, new_id as user
from tests.support.http import call
from tests.support.processes import answering_queries
from tests.support.rabbit import wait_for
from workers.video import feed_reads

EVENTS = "/api/v1/notify/events"
HIGHEST, LOWEST = "ffffffff-ffff-4fff-bfff-ffffffffffff", "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def stack(start_worker, start_ingress, make_database, s3_env, bearer, rmq):
    class Stack:
        db = make_database("video")

        def send_as_one_batch(self, who: str, comments: list[tuple[str, str | None]], post: str) -> None:
            """comments: (comment_id, parent_comment_id), parents first, in one HTTP request, and
            committed by the worker in one transaction: they arrive while it is held up on a row
            this test locks, so they wait as one backlog and form its next batch."""
            blocker = seed_post(self.db, user())
            lock = psycopg2.connect(self.db)
            try:
                lock.cursor().execute("SELECT 1 FROM feed_posts WHERE post_id = %s FOR UPDATE", (blocker,))
                like = publish(rmq, "interaction.liked", {"target_type": "post", "target_id": blocker}, who)
                wait_for(lambda: query(self.db, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                                "AND wait_event_type = 'Lock'")[0][0] == 1, message="worker held up")
                sent = [event("comment.created", user_id=who, data={
                    "comment_id": c, "post_id": post, "body": f"comment {c[:8]}",
                    **({"parent_comment_id": p} if p else {})}) for c, p in comments]
                status, body, _ = call(self.port, "POST", EVENTS, bearer(who), sent)
                assert status == 202, body
                wait_for(lambda: rmq.depth("video") == 0, message="backlog delivered to the worker")
                time.sleep(0.5)  # and read off its socket
            finally:
                lock.close()
            processed(self.db, like, *sent)
            # the attack needs them in one transaction: one xmin, one created_at
            assert query(self.db, "SELECT count(DISTINCT xmin::text), count(DISTINCT created_at) FROM comments "
                                  "WHERE comment_id = ANY(%s::uuid[])", ([c for c, _ in comments],)) == [(1, 1)]

        def comments(self, who: str, post: str, **params):
            qs = "&".join(f"{k}={v}" for k, v in params.items())
            return call(self.port, "GET", f"/api/v1/posts/{post}/comments?{qs}", bearer(who))

    s = Stack()
    worker = start_worker("video", VIDEO_DATABASE_URL=s.db, **s3_env)
    wait_for(lambda: any(l.get("msg") == "consuming" for l in worker.logs()) and answering_queries(worker),
             message="video worker consuming")
    s.port = start_ingress()
    return s


def shape(comments: list[dict]) -> list:
    """[(comment_id, [(reply_id, [...]), ...]), ...]"""
    return [(c["comment_id"], shape(c["replies"])) for c in comments]


def test_a_reply_to_a_reply_with_a_smaller_id_in_the_same_batch_reads_back_nested(stack):
    owner, fan = user(), user()
    post = seed_post(stack.db, owner)
    top = str(uuid.uuid4())
    # Given one batch: a comment, a reply with the highest id, and a reply to that with the lowest
    stack.send_as_one_batch(fan, [(top, None), (HIGHEST, top), (LOWEST, HIGHEST)], post)
    # When anyone reads the post's comments
    status, page, _ = stack.comments(user(), post, limit=20)
    # Then the page comes back, threaded as sent
    assert status == 200, page
    assert shape(page["comments"]) == [(top, [(HIGHEST, [(LOWEST, [])])])]
    assert page["comments"][0]["replies"][0]["replies"][0]["body"] == f"comment {LOWEST[:8]}"


def test_random_reply_chains_in_one_batch_read_back_as_sent(stack):
    owner, fan = user(), user()
    post = seed_post(stack.db, owner)
    rng = random.Random()
    # Given three threads of random reply trees, all in one batch, each comment's id lower than
    # the one before it (so any order by id puts replies first), threads interleaved
    ids = sorted((str(uuid.uuid4()) for _ in range(40)), reverse=True)
    ids[0], ids[-1] = HIGHEST, LOWEST
    roots = ids[:3]
    sent, children = [(r, None) for r in roots], {c: [] for c in ids}
    for comment_id in ids[3:]:
        parent = rng.choice([c for c, _ in sent])
        sent.append((comment_id, parent))
        children[parent].append(comment_id)
    stack.send_as_one_batch(fan, sent, post)

    def expected(c):
        return (c, [expected(r) for r in children[c]])

    # When the threads are read a page of one at a time
    pages, cursor = [], None
    for _ in range(len(roots)):
        status, page, _ = stack.comments(user(), post, limit=1, **({"cursor": cursor} if cursor else {}))
        assert status == 200, page
        pages += page["comments"]
        cursor = page["next_cursor"]
    # Then each thread is whole, in the order sent, replies in the order sent, and nothing follows
    assert cursor is None
    assert shape(pages) == [expected(r) for r in roots]


def test_cursors_of_the_old_order_still_page_and_bad_ones_are_400(stack):
    owner, fan = user(), user()
    post = seed_post(stack.db, owner)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    stack.send_as_one_batch(fan, [(first, None), (second, None)], post)

    def cursor(raw: str) -> str:
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    # A cursor as handed out before seq ordered the threads: (created_at, id of the last thread)
    (at,), = query(stack.db, "SELECT created_at FROM comments WHERE comment_id = %s", (first,))
    status, page, _ = stack.comments(fan, post, limit=5, cursor=cursor(f"{at.isoformat()}|{first}"))
    assert (status, [c["comment_id"] for c in page["comments"]]) == (200, [second])
    # one naming no thread of this post: an empty page, not an error
    status, page, _ = stack.comments(fan, post, limit=5, cursor=cursor(f"{at.isoformat()}|{uuid.uuid4()}"))
    assert (status, page["comments"], page["next_cursor"]) == (200, [], None)
    # one this API never gave out
    status, body, _ = stack.comments(fan, post, limit=5, cursor="bm90LWEtY3Vyc29y")
    assert (status, body["error"]) == (400, "invalid")


def test_a_parent_sorted_after_its_reply_still_nests(stack):
    owner, fan = user(), user()
    post = seed_post(stack.db, owner)
    top, reply, nested = (str(uuid.uuid4()) for _ in range(3))
    stack.send_as_one_batch(fan, [(top, None), (reply, top), (nested, reply)], post)
    # Given a parent whose seq is now past its reply's (seq can only be redrawn, never chosen)
    query(stack.db, "UPDATE comments SET seq = DEFAULT WHERE comment_id = %s", (reply,))
    # Then the tree the reader builds does not depend on the order rows come in
    status, page, _ = stack.comments(fan, post, limit=5)
    assert status == 200, page
    assert shape(page["comments"]) == [(top, [(reply, [(nested, [])])])]


# ---- the tree builder alone -----------------------------------------------------------------

class ScriptedCursor:
    """Answers read_comments' statements in turn: the post's owner, the threads, the replies."""

    def __init__(self, owner: str, roots: list[tuple], replies: list[tuple]):
        self.answers = [[(owner,)], roots, replies]

    def execute(self, sql, params=None):
        self.rows = self.answers.pop(0)

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows


def test_the_tree_builder_takes_replies_in_any_order_and_drops_orphans_without_failing():
    owner, root, a, b, orphan, under_orphan = (str(uuid.uuid4()) for _ in range(6))
    at = datetime.now(timezone.utc)
    row = lambda cid: (cid, owner, "text", 0, False, at)
    # children before their parents, and a reply whose parent is not among the rows
    replies = [(*row(b), a), (*row(under_orphan), orphan), (*row(a), root)]
    ctx = types.SimpleNamespace(cursor=ScriptedCursor(owner, [row(root)], replies))
    page = feed_reads.read_comments(ctx, Request("post.comments", owner, {"post_id": str(uuid.uuid4()), "limit": 5}))
    assert shape(page["comments"]) == [(root, [(a, [(b, [])])])]
