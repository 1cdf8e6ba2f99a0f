"""`workers prune` on real databases and the local S3 server: what is past its retention goes,
per kind, in batches, and nothing younger; --dry-run counts the same and changes nothing; a
duplicate inside the idempotency window is still recognised by a running worker, and one whose
key was pruned meets the domain's own key (docs/operations.md, Retention)."""
from __future__ import annotations

import uuid

import orjson
import psycopg2
import pytest

from tests.support.bus import outcomes, publish_body
from tests.support.db import processed, query
from tests.support.events import event
from tests.support.processes import answering_queries, run_cli
from tests.support.rabbit import wait_for

DOMAINS = ("settings", "video", "notify")


def uid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def dbs(make_database) -> dict[str, str]:
    return {d: make_database(d) for d in DOMAINS}


@pytest.fixture
def env(dbs, s3_env) -> dict:
    return {**{f"{d.upper()}_DATABASE_URL": url for d, url in dbs.items()}, **s3_env}


def prune(env: dict, *args: str, check: bool = True, **extra) -> tuple[dict, object]:
    """(target line → count, the finished process) of `workers prune --json` on the test's databases."""
    result = run_cli("prune", *DOMAINS, "--json", *args, env={**env, **extra}, check=check)
    counts = {}
    for line in result.stdout.splitlines():
        row = orjson.loads(line)
        counts[f"{row['database']} {row['target']}"] = row.get("removed", row.get("would_remove", row.get("error")))
    return counts, result


def keys(url: str, *ages: str) -> list[str]:
    """An idempotency key per age (a PostgreSQL interval) and a rejection of the same age; their ids."""
    ids = []
    for age in ages:
        i = uid()
        query(url, "INSERT INTO idempotency_keys (consumer, client_generated_id, user_id, event_type, payload_hash, "
                   "processed_at) VALUES ('t', %s, %s, 'x', '\\x00', now() - %s::interval)", (i, uid(), age))
        query(url, "INSERT INTO rejections (consumer, user_id, client_generated_id, event_type, reason, detail, "
                   "rejected_at) VALUES ('t', %s, %s, 'x', 'forbidden', 'no', now() - %s::interval)", (uid(), i, age))
        ids.append(i)
    return ids


def video(url: str, storage, status: str, age: str, with_object: bool = True) -> tuple[str, str]:
    """A videos row in `status`, last changed `age` ago, and (optionally) its source object; (id, key)."""
    video_id, owner = uid(), uid()
    key = f"uploads/{owner}/{video_id}/source"
    query(url, "INSERT INTO videos (video_id, owner_id, status, source_key, filename, content_type, declared_size, "
               "updated_at) VALUES (%s, %s, %s, %s, 'a.mp4', 'video/mp4', 10, now() - %s::interval)",
          (video_id, owner, status, key, age))
    if with_object:
        storage.client.put_object(Bucket=storage.cfg.bucket, Key=key, Body=b"0123456789", ContentType="video/mp4")
    return video_id, key


def exists(storage, key: str) -> bool:
    return storage.head(key) is not None


def test_each_kind_loses_what_is_past_its_retention_and_keeps_the_rest(dbs, env, storage):
    settings, videos, notify = dbs["settings"], dbs["video"], dbs["notify"]
    old_keys = {d: keys(url, "15 days") for d, url in dbs.items()}
    young_keys = {d: keys(url, "13 days") for d, url in dbs.items()}
    # rate limits: a 15-minute attempt window (FEED_ACCESS_WINDOW_S), an hour for visibility changes
    query(settings, "INSERT INTO feed_access_limits VALUES (%s, %s, now() - interval '16 minutes', 3), "
                    "(%s, %s, now() - interval '14 minutes', 3)", (uid(), uid(), uid(), uid()))
    query(settings, "INSERT INTO access_limits VALUES ('feed', %s, now() - interval '16 minutes', 5), "
                    "('viewer', %s, now() - interval '1 minute', 5), ('visibility', %s, now() - interval '59 minutes', 2), "
                    "('visibility', %s, now() - interval '61 minutes', 2)", (uid(), uid(), uid(), uid()))
    query(videos, "INSERT INTO feed_access_grants VALUES (%s, %s, 1, now() - interval '1 second'), "
                  "(%s, %s, 1, now() + interval '1 hour')", (uid(), uid(), uid(), uid()))
    query(notify, "INSERT INTO inbox_items VALUES (%s, 1, %s, 'x', '{}', now() - interval '31 days'), "
                  "(%s, 1, %s, 'x', '{}', now() - interval '29 days')", (uid(), uid(), uid(), uid()))
    abandoned = video(videos, storage, "pending_upload", "25 hours")
    abandoned_empty = video(videos, storage, "pending_upload", "25 hours", with_object=False)
    uploading = video(videos, storage, "pending_upload", "1 hour")
    ready_old, failed_old = video(videos, storage, "ready", "8 days"), video(videos, storage, "failed", "8 days")
    ready_young = video(videos, storage, "ready", "6 days")
    processing = video(videos, storage, "processing", "30 days")  # not settled: transcode still needs it

    bucket = f"s3://{storage.cfg.bucket}/uploads/"
    expected = {
        **{f"{d} idempotency_keys": 1 for d in DOMAINS}, **{f"{d} rejections": 1 for d in DOMAINS},
        "settings feed_access_limits": 1, "settings access_limits": 2,
        "video feed_access_grants": 1, "video videos (abandoned uploads)": 2,
        f"video {bucket} (abandoned uploads)": 1, f"video {bucket} (sources of ready or failed videos)": 2,
        "notify inbox_items": 1,
    }
    dry, result = prune(env, "--dry-run")
    assert dry == expected, result.stdout + result.stderr
    assert exists(storage, abandoned[1]) and exists(storage, ready_old[1])
    assert query(videos, "SELECT count(*) FROM videos WHERE source_deleted_at IS NOT NULL")[0][0] == 0

    done, result = prune(env)
    assert done == expected, result.stdout + result.stderr
    assert result.returncode == 0
    for d, url in dbs.items():
        left = {r[0] for r in query(url, "SELECT client_generated_id::text FROM idempotency_keys")}
        assert left == set(young_keys[d]) and not left & set(old_keys[d])
        assert {r[0] for r in query(url, "SELECT client_generated_id::text FROM rejections")} == set(young_keys[d])
    assert query(settings, "SELECT count(*) FROM feed_access_limits")[0][0] == 1
    assert sorted(r[0] for r in query(settings, "SELECT scope FROM access_limits")) == ["viewer", "visibility"]
    assert query(videos, "SELECT count(*) FROM feed_access_grants WHERE expires_at > now()")[0][0] == 1
    assert query(videos, "SELECT count(*) FROM feed_access_grants")[0][0] == 1
    assert query(notify, "SELECT count(*) FROM inbox_items")[0][0] == 1

    rows = dict(query(videos, "SELECT video_id::text, source_deleted_at IS NOT NULL FROM videos"))
    assert abandoned[0] not in rows and abandoned_empty[0] not in rows and not exists(storage, abandoned[1])
    assert rows[uploading[0]] is False and exists(storage, uploading[1])
    assert rows[ready_old[0]] is True and rows[failed_old[0]] is True  # the post stays; its source is gone
    assert not exists(storage, ready_old[1]) and not exists(storage, failed_old[1])
    assert rows[ready_young[0]] is False and exists(storage, ready_young[1])
    assert rows[processing[0]] is False and exists(storage, processing[1])

    again, _ = prune(env)
    assert set(again.values()) == {0}  # a second run finds nothing, the marked sources included


def test_more_rows_than_one_batch_all_go_and_a_row_a_worker_holds_is_left_for_next_time(dbs, env, storage):
    url = dbs["video"]
    old = keys(url, *["20 days"] * 23)
    young = keys(url, "1 day")
    abandoned = [video(url, storage, "pending_upload", "2 days", with_object=i % 2 == 0) for i in range(11)]
    held = psycopg2.connect(url)  # a worker's transaction holding one old key's row
    try:
        with held.cursor() as cur:
            cur.execute("SELECT 1 FROM idempotency_keys WHERE client_generated_id = %s FOR UPDATE", (old[0],))
        done, result = prune(env, PRUNE_BATCH="5")
        assert result.returncode == 0, result.stdout + result.stderr
        assert done["video idempotency_keys"] == 22 and done["video rejections"] == 23
        assert done["video videos (abandoned uploads)"] == 11
        assert done[f"video s3://{storage.cfg.bucket}/uploads/ (abandoned uploads)"] == 6
        left = {r[0] for r in query(url, "SELECT client_generated_id::text FROM idempotency_keys")}
        assert left == {old[0], *young}
    finally:
        held.rollback()
        held.close()
    assert query(url, "SELECT count(*) FROM videos")[0][0] == 0
    assert not any(exists(storage, key) for _, key in abandoned)
    done, _ = prune(env, PRUNE_BATCH="5")
    assert done["video idempotency_keys"] == 1  # the next run gets it


def test_an_unreachable_database_is_reported_and_the_others_are_still_pruned(dbs, env):
    old = keys(dbs["settings"], "30 days")
    broken = {**env, "VIDEO_DATABASE_URL": "postgresql://spotter:hunter2secret@127.0.0.1:1/video_db"}
    done, result = prune(broken, check=False)
    assert result.returncode == 1
    assert done["video database"].startswith("unreachable: ")
    assert "hunter2secret" not in result.stdout + result.stderr
    assert done["settings idempotency_keys"] == 1 and done["notify idempotency_keys"] == 0
    assert query(dbs["settings"], "SELECT count(*) FROM idempotency_keys WHERE client_generated_id = %s",
                 (old[0],))[0][0] == 0


def test_an_unreachable_bucket_fails_its_lines_and_keeps_the_rows_it_could_not_clear(dbs, env, storage):
    video_id, _ = video(dbs["video"], storage, "pending_upload", "2 days")
    done, result = prune(env, check=False, S3_ENDPOINT_URL="http://127.0.0.1:1")
    assert result.returncode == 1
    assert "StorageUnavailable" in done["video videos (abandoned uploads)"]
    assert done["video idempotency_keys"] == 0 and done["settings access_limits"] == 0  # the rest ran
    assert query(dbs["video"], "SELECT count(*) FROM videos WHERE video_id = %s", (video_id,))[0][0] == 1


@pytest.mark.parametrize("setting, value", [("IDEMPOTENCY_RETENTION_S", "86400"),
                                            ("ABANDONED_UPLOAD_RETENTION_S", "600"),
                                            ("PRUNE_BATCH", "lots")])
def test_an_unsafe_or_malformed_retention_is_refused_before_anything_is_deleted(dbs, env, setting, value):
    old = keys(dbs["settings"], "30 days")
    result = run_cli("prune", *DOMAINS, env={**env, setting: value}, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("refusing to prune:") and setting in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert query(dbs["settings"], "SELECT count(*) FROM idempotency_keys WHERE client_generated_id = %s",
                 (old[0],))[0][0] == 1


def test_a_duplicate_inside_the_window_is_recognised_and_one_whose_key_was_pruned_meets_the_note_id(
        make_database, start_worker, rmq):
    db = make_database("machine")
    proc = start_worker("machine", MACHINE_DATABASE_URL=db)
    wait_for(lambda: any(l.get("msg") == "consuming" for l in proc.logs()) and answering_queries(proc),
             message="machine worker consuming")
    persisted = rmq.tap("app.events", "machine.note.persisted")
    author, note_id = uid(), uid()
    body = event("machine.note.created", user_id=author,
                 data={"note_id": note_id, "machine_id": "QR:rack.1", "body": "pins at 5"})
    env = {"MACHINE_DATABASE_URL": db}

    def handled(msg: str) -> int:
        return sum(1 for l in proc.logs() if l.get("msg") == msg and l.get("client_generated_id") == body["client_generated_id"])

    publish_body(rmq, body)
    processed(db, body)
    assert len(outcomes(rmq, persisted, 1)) == 1

    # inside the window: prune keeps the key, and the worker skips the copy
    run_cli("prune", "machine", env=env)
    publish_body(rmq, body)
    wait_for(lambda: handled("duplicate skipped") == 1, message="the copy skipped as a duplicate")

    # past the window: the key goes, the copy is applied as new, and the note's own key absorbs it
    query(db, "UPDATE idempotency_keys SET processed_at = now() - interval '15 days' WHERE client_generated_id = %s",
          (body["client_generated_id"],))
    result = run_cli("prune", "machine", env=env)
    assert "machine idempotency_keys: 1 removed" in result.stdout
    publish_body(rmq, body)
    wait_for(lambda: handled("event processed") == 2, message="the copy processed again")
    assert query(db, "SELECT body FROM machine_notes WHERE note_id = %s", (note_id,)) == [("pins at 5",)]
    assert rmq.depth(persisted) == 0  # no second machine.note.persisted: the note stands as first created
    assert query(db, "SELECT count(*) FROM idempotency_keys WHERE client_generated_id = %s",
                 (body["client_generated_id"],))[0][0] == 1  # its receipt reads `applied` again
