"""`workers dlq …` and `workers status` on a real broker, database and worker."""
from __future__ import annotations

import json
import uuid


from shared.envelope import outcome_id
from tests.support.db import query
from tests.support.events import SEED_DATA, dumps, event
from tests.support.processes import run_cli
from tests.support.rabbit import wait_for


def test_dlq_list_show_replay_purge(rmq, base_env):
    run_cli("topology", env=base_env)
    bad = [event(data={**SEED_DATA, "age": 500}) for _ in range(2)]
    for e in bad:  # as the worker dead-letters them
        rmq.publish("app.dead", "settings", dumps(e), message_id=e["client_generated_id"], type=e["event_type"],
                    headers={"x-dead-reason": "invalid", "x-dead-detail": "data.age must be <= 120",
                             "x-attempts": 1})
    listing = run_cli("dlq", "list", "settings", env=base_env).stdout
    assert "settings.dead: 2 message(s)" in listing
    assert "invalid" in listing and "user.settings.submitted" in listing
    as_json = json.loads(run_cli("dlq", "list", "settings", "--json", env=base_env).stdout)
    assert as_json["groups"] == [{"reason": "invalid", "event_type": "user.settings.submitted", "count": 2}]
    assert as_json["total"] == 2 and not as_json["truncated"] and len(as_json["messages"]) == 2
    shown = json.loads(run_cli("dlq", "show", "settings", bad[0]["client_generated_id"], env=base_env).stdout)
    assert shown["reason"] == "invalid" and json.loads(shown["body"]) == bad[0]
    # peeking leaves them in place
    assert rmq.depth("settings.dead") == 2
    assert run_cli("dlq", "replay", "settings", env=base_env, check=False).returncode == 2  # nothing chosen
    out = run_cli("dlq", "replay", "settings", "--id", bad[0]["client_generated_id"], env=base_env).stdout
    assert "replayed 1" in out
    assert rmq.depth("settings") == 1 and rmq.depth("settings.dead") == 1
    (props, body), = rmq.drain("settings")
    assert body == dumps(bad[0]) and "x-dead-reason" not in props.headers and "x-attempts" not in props.headers
    assert props.headers["x-replayed"] == 1 and props.message_id == bad[0]["client_generated_id"]
    # purge asks first; "no" keeps them
    refused = run_cli("dlq", "purge", "settings", "--all", env=base_env, input="n\n", check=False)
    assert refused.returncode != 0 and "for good?" in refused.stdout
    assert rmq.depth("settings.dead") == 1
    assert "purged 1" in run_cli("dlq", "purge", "settings", "--all", "--yes", env=base_env).stdout
    assert rmq.depth("settings.dead") == 0


def test_a_peek_stops_at_its_limit_and_says_so(rmq, base_env):
    run_cli("topology", env=base_env)
    for _ in range(5):
        e = event()
        rmq.publish("app.dead", "settings", dumps(e), message_id=e["client_generated_id"], type=e["event_type"],
                    headers={"x-dead-reason": "invalid"})
    listing = run_cli("dlq", "list", "settings", "--limit", "3", "--json", env=base_env)
    assert json.loads(listing.stdout)["truncated"] and "2 more dead letter(s)" in listing.stderr
    assert "replayed 3" in run_cli("dlq", "replay", "settings", "--all", "--limit", "3", env=base_env).stdout
    assert rmq.depth("settings.dead") == 2 and rmq.depth("settings") == 3


def test_three_comments_poisoned_then_fixed_land_once_each_after_replay(start_worker, make_database, s3_env,
                                                                        rmq, base_env):
    db = make_database("video")
    worker = start_worker("video", VIDEO_DATABASE_URL=db, **s3_env)
    wait_for(lambda: any(l.get("msg") == "consuming" for l in worker.logs()), message="video worker consuming")
    owner, author = str(uuid.uuid4()), str(uuid.uuid4())
    video_id = str(uuid.uuid4())
    post_id = str(outcome_id(video_id, "feed.post.created"))
    # Given three comments on a post the video worker does not know yet
    comments = [event("comment.created", user_id=author,
                      data={"comment_id": str(uuid.uuid4()), "post_id": post_id, "body": f"great set {i}"})
                for i in range(3)]
    for c in comments:
        rmq.publish("app.events", "comment.created", dumps(c), message_id=c["client_generated_id"], type=c["event_type"])
    # Then they are dead-lettered as not found
    wait_for(lambda: rmq.depth("video.dead") == 3, message="three dead letters")
    listing = json.loads(run_cli("dlq", "list", "video", "--json", env=base_env).stdout)
    assert listing["groups"] == [{"reason": "not_found", "event_type": "comment.created", "count": 3}]
    # When the post exists (its media.processed was late) and the group is replayed
    query(db, "INSERT INTO videos (video_id, owner_id, status, source_key, filename, content_type, declared_size) "
              "VALUES (%s, %s, 'ready', %s, 'a.mp4', 'video/mp4', 1)",
          (video_id, owner, f"uploads/{owner}/{video_id}/source"))
    query(db, "INSERT INTO feed_posts (post_id, owner_id, video_id) VALUES (%s, %s, %s)", (post_id, owner, video_id))
    out = run_cli("dlq", "replay", "video", "--reason", "not_found", "--event-type", "comment.created",
                  env=base_env).stdout
    assert "replayed 3 message(s) to video" in out
    # Then each comment lands once and nothing is dead any more
    wait_for(lambda: query(db, "SELECT count(*) FROM comments")[0][0] == 3, message="three comments")
    assert rmq.depth("video.dead") == 0
    # And replaying again, or the same three delivered once more, changes nothing
    assert "replayed 0" in run_cli("dlq", "replay", "video", "--all", env=base_env).stdout
    for c in comments:
        rmq.publish("", "video", dumps(c), message_id=c["client_generated_id"], type=c["event_type"])
    wait_for(lambda: sum(l.get("msg") == "duplicate skipped" for l in worker.logs()) == 3, message="duplicates")
    assert sorted(r[0] for r in query(db, "SELECT body FROM comments")) == [f"great set {i}" for i in range(3)]
    assert query(db, "SELECT comment_count FROM feed_posts")[0][0] == 3
    assert query(db, "SELECT count(*) FROM idempotency_keys WHERE event_type = 'comment.created'")[0][0] == 3
    assert rmq.depth("video.dead") == 0 and rmq.depth("video") == 0


def test_status_shows_each_worker_queue_dead_letters_and_outbox(rmq, base_env, settings_db):
    run_cli("topology", env=base_env)
    rmq.publish("app.dead", "settings", dumps(event()), headers={"x-dead-reason": "invalid"})
    for _ in range(2):
        rmq.publish("app.events", "user.settings.submitted", dumps(event()))
    # a consumer holds one message unacked, the other waits
    held = []
    rmq.channel.basic_qos(prefetch_count=1)
    rmq.channel.basic_consume("settings", lambda ch, method, props, body: held.append(method.delivery_tag))
    wait_for(lambda: rmq.connection.process_data_events(time_limit=0.1) or held, message="a delivery")
    # the video database cannot be reached (nothing listens on port 1), whatever this machine holds
    unreachable = "postgresql://postgres:s3cret-pw@127.0.0.1:1/video_db"
    env = {**base_env, "SETTINGS_DATABASE_URL": settings_db, "VIDEO_DATABASE_URL": unreachable}

    def settings_line():
        rmq.connection.process_data_events(time_limit=0)  # heartbeats
        out = run_cli("status", env=env).stdout
        line = next(l for l in out.splitlines() if l.startswith("settings"))
        return line if "unacked=1" in line else None
    # the management API's statistics lag a few seconds
    line = wait_for(settings_line, timeout=25, interval=1, message="unacked=1 in status")
    assert "ready=1" in line and "consumers=1" in line and "dead=1" in line and "outbox_backlog=0" in line
    data = json.loads(run_cli("status", "--json", env=env).stdout)
    settings = next(r for r in data["workers"] if r["worker"] == "settings")
    assert (settings["ready"], settings["unacked"], settings["consumers"], settings["dead"]) == (1, 1, 1, 1)
    assert settings["outbox_backlog"] == 0 and data["note"] is None
    # another database is unreachable: said so, without its URL
    video = next(r for r in data["workers"] if r["worker"] == "video")
    assert str(video["outbox_backlog"]).startswith("unreachable")
    assert "postgresql://" not in video["outbox_backlog"] and "s3cret-pw" not in video["outbox_backlog"]


def test_status_without_the_management_api_says_unacked_is_unknown(rmq, base_env):
    run_cli("topology", env=base_env)
    result = run_cli("status", env={**base_env, "RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:1"})
    assert "unacked=?" in result.stdout and "unacked unknown" in result.stderr
