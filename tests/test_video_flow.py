"""The seed's video flow end to end: request an upload over HTTP, upload to storage, complete,
and the feed post appears with a playable rendition and a thumbnail."""
from __future__ import annotations

import http.client
import json
import subprocess
import uuid

import pytest

from tests.support.db import query
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import Rabbit, wait_for
from tests.support.uploads import post_form
from tests.support.http import ready
from tests.support.net import free_port
from tests.support.events import event


def request(port, method, path, token, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"null")


def ffprobe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, check=True, text=True).stdout
    return json.loads(out)


@pytest.fixture
def stack(base_env, make_database, s3_env):
    db = make_database("video")
    env = {**base_env, **s3_env, "VIDEO_DATABASE_URL": db, "PORT": str(free_port())}
    run_cli("topology", env=env)
    procs = [workers_cli("run", "video", env=env), workers_cli("run", "transcode", env=env),
             workers_cli("serve", env=env)]
    wait_for(lambda: ready(int(env["PORT"])), message="ingress ready")
    yield env, db
    for proc in procs:
        proc.terminate()


def test_upload_complete_and_the_post_appears(stack, storage, tmp_path):
    env, db = stack
    port = int(env["PORT"])
    owner = str(uuid.uuid4())
    token = run_cli("token", owner, env=env).stdout.strip()
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25:duration=3",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", str(clip)], check=True)
    video_id = str(uuid.uuid4())
    # Given the app asks for an upload
    status, body = request(port, "POST", "/api/v1/notify/events", token, event(
        "media.upload_requested", user_id=owner,
        data={"video_id": video_id, "filename": "leg-day.mp4", "content_type": "video/mp4",
              "size_bytes": clip.stat().st_size, "caption": "Leg day"}))
    assert status == 200, body
    upload = body["result"]["upload"]
    # When the file goes to storage with the form, and the app says it is complete
    assert post_form(upload, clip.read_bytes())[0] in (200, 201, 204)
    status, body = request(port, "POST", f"/api/v1/videos/{video_id}/complete", token)
    assert status == 202, body
    # Then the post appears, with a playable rendition and a thumbnail
    wait_for(lambda: query(db, "SELECT count(*) FROM feed_posts WHERE video_id = %s", (video_id,))[0][0] == 1,
             timeout=90, message="feed post")
    assert query(db, "SELECT status FROM videos WHERE video_id = %s", (video_id,))[0][0] == "ready"
    assert query(db, "SELECT caption FROM feed_posts WHERE video_id = %s", (video_id,))[0][0] == "Leg day"
    rendition, thumbnail = tmp_path / "r.mp4", tmp_path / "t.jpg"
    keys = query(db, "SELECT renditions, thumbnail_key FROM media_metadata WHERE video_id = %s", (video_id,))[0]
    storage.download(keys[0][0]["key"], str(rendition))
    storage.download(keys[1], str(thumbnail))
    probe = ffprobe(rendition)
    codecs = sorted(s["codec_name"] for s in probe["streams"])
    assert codecs == ["aac", "h264"]
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (640, 360)  # never upscaled
    assert abs(float(probe["format"]["duration"]) - 3.0) <= 0.1
    assert ffprobe(thumbnail)["streams"][0]["codec_name"] == "mjpeg"


def _request_upload(port, token, owner, clip_size: int, **envelope) -> tuple[str, dict]:
    video_id = str(uuid.uuid4())
    status, body = request(port, "POST", "/api/v1/notify/events", token, event(
        "media.upload_requested", user_id=owner, **envelope,
        data={"video_id": video_id, "filename": "clip.mp4", "content_type": "video/mp4", "size_bytes": clip_size}))
    assert status == 200, body
    return video_id, body["result"]["upload"]


def test_completing_a_missing_or_someone_elses_video_is_404_at_once(stack, storage):
    env, db = stack
    port = int(env["PORT"])
    owner, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    owner_token, stranger_token = (run_cli("token", u, env=env).stdout.strip() for u in (owner, stranger))
    video_id, _ = _request_upload(port, owner_token, owner, 1000)
    for token, vid in ((owner_token, str(uuid.uuid4())), (stranger_token, video_id)):
        status, body = request(port, "POST", f"/api/v1/videos/{vid}/complete", token)
        assert (status, body["error"]) == (404, "not_found"), body
    # nothing was queued to die: the video worker's dead-letter queue stays empty
    client = Rabbit(env["RABBITMQ_URL"])
    try:
        assert client.depth("video.dead") == 0
    finally:
        client.close()
    assert query(db, "SELECT status FROM videos WHERE video_id = %s", (video_id,)) == [("pending_upload",)]


def test_a_stranger_cannot_pre_claim_the_completion_of_someone_elses_video(stack, storage, tmp_path):
    """The stranger posts an event to the video worker under the id the completion used to get
    (uuid5 of the video and owner ids, both visible to them): the owner's completion still lands."""
    env, db = stack
    port = int(env["PORT"])
    owner, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    owner_token, stranger_token = (run_cli("token", u, env=env).stdout.strip() for u in (owner, stranger))
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True)
    video_id, upload = _request_upload(port, owner_token, owner, clip.stat().st_size)
    guessed = str(uuid.uuid5(uuid.UUID(video_id), f"media.uploaded/{owner}"))
    _request_upload(port, stranger_token, stranger, 1000, event_id=guessed)
    assert post_form(upload, clip.read_bytes())[0] in (200, 201, 204)
    status, body = request(port, "POST", f"/api/v1/videos/{video_id}/complete", owner_token)
    assert status == 202, body
    assert body["accepted"] != [guessed]
    wait_for(lambda: query(db, "SELECT status FROM videos WHERE video_id = %s", (video_id,))[0][0]
             in ("uploaded", "processing", "ready"), timeout=30, message="the owner's completion verified")
    client = Rabbit(env["RABBITMQ_URL"])
    try:
        assert client.depth("video.dead") == 0
    finally:
        client.close()
