"""Transcode worker on the real broker, database, S3 server (over HTTP) and ffmpeg: uploads become a
playable 720p rendition and a thumbnail, or `media.failed` with a reason; never a retry storm."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import orjson
import pytest

from shared import envelope
from shared.errors import Forbidden
from workers.runtime.storage import Storage
from tests.support.db import query
from tests.support.media import publish_verified, upload
from tests.support import clips
from tests.support.events import event
from tests.support.rabbit import wait_for
from tests.support.tcpproxy import TcpProxy
from workers.transcode import worker as transcode
from workers.transcode import capabilities, commands, job, probe, sandbox
from workers.transcode.errors import Rejected
from workers.transcode.limits import Limits

JOB_TIMEOUT = 60  # a loaded 2-core machine is slow, not broken


# ---- helpers -----------------------------------------------------------------------------------

@pytest.fixture
def video_db(make_database):
    return make_database("video")


@pytest.fixture
def scratch(tmp_path) -> Path:
    """The workers' TRANSCODE_TMPDIR: what a job leaves behind shows here."""
    path = tmp_path / "scratch"
    path.mkdir()
    return path


@pytest.fixture
def run_transcoder(start_worker, video_db, s3_env, scratch):
    """run_transcoder(**env) → a consuming `workers run transcode` process."""
    def start(**env):
        worker = start_worker("transcode", VIDEO_DATABASE_URL=video_db, TRANSCODE_TMPDIR=scratch,
                              **{**s3_env, **env})
        wait_for(lambda: any(l.get("msg") == "consuming" for l in worker.logs()) or not worker.alive(),
                 timeout=30, message="transcode worker consuming")
        assert worker.alive(), worker.text()[-2000:]
        return worker
    return start


def transcoded(storage: Storage, path: Path) -> dict:
    """`path` uploaded, verified and run through the whole job in this process: media.processed's data."""
    verified = upload(storage, path)
    return job.run(storage, Limits(), verified["user_id"], verified["data"]["video_id"], verified["data"]["key"],
                   path.stat().st_size)


def received(rmq, queue: str, count: int, timeout: float = JOB_TIMEOUT) -> list[dict]:
    wait_for(lambda: rmq.depth(queue) >= count, timeout=timeout, message=f"{count} message(s) on {queue}")
    return [orjson.loads(body) for _, body in rmq.drain(queue)]


def log_lines(worker, msg: str, event_id: str | None = None) -> list[dict]:
    return [l for l in worker.logs() if l.get("msg") == msg
            and (event_id is None or l.get("client_generated_id") == event_id)]


def local(storage: Storage, key: str, tmp_path: Path) -> Path:
    path = tmp_path / key.replace("/", "_")
    storage.download(key, str(path))
    return path


def top_level_atoms(path: Path) -> list[str]:
    names, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        names.append(data[offset + 4:offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        if size < 8:
            break
        offset += size
    return names


def duration(path: Path) -> float:
    return float(clips.ffprobe(path)["format"]["duration"])


def assert_playable(path: Path, width: int, height: int, source: Path) -> dict:
    """H.264 + AAC at this size, upright, as long as the source (±0.1 s), index first."""
    info = clips.ffprobe(path)
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    video = clips.video_stream(info)
    assert (video["width"], video["height"], video["pix_fmt"]) == (width, height, "yuv420p")
    assert clips.rotation(video) == 0  # turned by ffmpeg, not left to the player
    assert abs(float(info["format"]["duration"]) - duration(source)) <= 0.1
    atoms = top_level_atoms(path)
    assert atoms.index("moov") < atoms.index("mdat")  # +faststart: playable while it downloads
    return info


def ffmpeg_children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                if Path(f"/proc/{kid}/comm").read_text().strip() == "ffmpeg":
                    found.append(int(kid))
            except OSError:
                pass
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class CountingServer:
    """A TCP listener that only counts who connects: ffmpeg following a playlist would."""

    def __init__(self):
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


# ---- through the worker ----------------------------------------------------------------------------

def test_upload_becomes_a_playable_720p_rendition_and_a_thumbnail(run_transcoder, rmq, storage, tmp_path):
    # Given a transcode worker and a 1080p upload with sound
    worker = run_transcoder()
    processed, failed = rmq.tap("app.events", "media.processed"), rmq.tap("app.events", "media.failed")
    source = clips.clip(tmp_path / "source.mp4", 1920, 1080, seconds=2.0)
    verified = upload(storage, source)
    user, video = verified["user_id"], verified["data"]["video_id"]
    # When the video worker says it is verified
    publish_verified(rmq, verified)
    # Then media.processed tells the rendition's own facts, under the fixed keys
    (out,) = received(rmq, processed, 1)
    assert out["event_type"] == "media.processed" and out["source_service"] == "transcode"
    assert out["user_id"] == user
    assert out["client_generated_id"] == str(uuid.uuid5(uuid.UUID(verified["client_generated_id"]), f"media.processed/{user}"))
    data = out["data"]
    rendition_key, thumbnail_key = f"media/{user}/{video}/720p.mp4", f"media/{user}/{video}/thumb.jpg"
    assert data["video_id"] == video and data["thumbnail_key"] == thumbnail_key
    assert (data["width"], data["height"]) == (1280, 720)
    assert abs(data["duration_s"] - duration(source)) <= 0.1
    (rendition,) = data["renditions"]
    assert rendition == {"key": rendition_key, "content_type": "video/mp4", "width": 1280, "height": 720,
                         "size_bytes": storage.head(rendition_key)["size"], "codec": "h264"}
    # and storage holds exactly those two objects, typed, which ffprobe reads as promised
    assert sorted(storage.list(f"media/{user}/{video}/")) == [rendition_key, thumbnail_key]
    assert storage.head(rendition_key)["content_type"] == "video/mp4"
    assert storage.head(thumbnail_key)["content_type"] == "image/jpeg"
    assert_playable(local(storage, rendition_key, tmp_path), 1280, 720, source)
    thumb = clips.video_stream(clips.ffprobe(local(storage, thumbnail_key, tmp_path)))
    assert (thumb["codec_name"], thumb["width"], thumb["height"]) == ("mjpeg", 1280, 720)
    assert rmq.depth(failed) == 0
    assert len(log_lines(worker, "event processed", verified["client_generated_id"])) == 1


def test_portrait_video_stays_portrait(run_transcoder, rmq, storage, tmp_path):
    # Given portrait frames, and landscape frames a phone marked to be shown turned 90°
    run_transcoder()
    processed = rmq.tap("app.events", "media.processed")
    portrait_file = clips.clip(tmp_path / "portrait.mp4", 360, 640, seconds=2.0)
    landscape = clips.clip(tmp_path / "landscape.mp4", 640, 360, seconds=2.0)
    turned_file = clips.rotated(tmp_path / "turned.mp4", landscape, 90)
    assert abs(clips.rotation(clips.video_stream(clips.ffprobe(turned_file)))) == 90
    portrait, turned = upload(storage, portrait_file), upload(storage, turned_file)
    # When both are transcoded
    publish_verified(rmq, portrait)
    publish_verified(rmq, turned)
    # Then both come out 360×640 frames without a rotation left for the player
    by_video = {e["data"]["video_id"]: e["data"] for e in received(rmq, processed, 2)}
    for verified, source in ((portrait, portrait_file), (turned, turned_file)):
        data = by_video[verified["data"]["video_id"]]
        assert (data["width"], data["height"]) == (360, 640)
        assert_playable(local(storage, data["renditions"][0]["key"], tmp_path), 360, 640, source)
        thumb = clips.video_stream(clips.ffprobe(local(storage, data["thumbnail_key"], tmp_path)))
        assert (thumb["width"], thumb["height"]) == (360, 640)


def test_what_is_not_a_video_fails_once_with_a_reason(run_transcoder, rmq, storage, tmp_path, scratch):
    # Given a worker, and a server that notices if anyone follows a playlist's links
    worker = run_transcoder()
    processed, failed = rmq.tap("app.events", "media.processed"), rmq.tap("app.events", "media.failed")
    lure = CountingServer()
    user = str(uuid.uuid4())
    good = clips.clip(tmp_path / "good.mp4", 320, 240, seconds=2.0)
    cases = {
        "text": (upload(storage, clips.text_file(tmp_path / "notes.mp4"), user), "not_a_video"),
        "truncated": (upload(storage, clips.truncated(tmp_path / "cut.mp4", good), user), "not_a_video"),
        "playlist": (upload(storage, clips.hls_playlist(tmp_path / "playlist.mp4",
                                                        f"http://127.0.0.1:{lure.port}/segment.ts"), user),
                     "unsupported_format"),
        "missing": (upload(storage, tmp_path / "never-uploaded.mp4", user), "source_missing"),
    }
    # When each is published as a verified upload
    for verified, _ in cases.values():
        publish_verified(rmq, verified)
    # Then each ends as one media.failed with its code and a sentence for the owner
    by_video = {e["data"]["video_id"]: e for e in received(rmq, failed, len(cases))}
    for name, (verified, code) in cases.items():
        out = by_video[verified["data"]["video_id"]]
        assert out["data"]["code"] == code, name
        assert out["user_id"] == user
        reason = out["data"]["reason"]
        assert 10 < len(reason) <= 300 and reason.endswith(".") and "/tmp" not in reason and "@" not in reason, reason
    # and nothing was stored, fetched, retried or dead-lettered: each was handled exactly once
    assert storage.list(f"media/{user}/") == []
    assert lure.connections == 0
    lure.sock.close()
    assert rmq.depth(processed) == 0 and rmq.depth("transcode.dead") == 0
    for verified, _ in cases.values():
        assert len(log_lines(worker, "event processed", verified["client_generated_id"])) == 1
    assert log_lines(worker, "event retried") == [] and log_lines(worker, "event dead-lettered") == []
    assert list(scratch.iterdir()) == []  # every scratch dir removed


def test_the_same_verified_upload_twice_is_transcoded_once(run_transcoder, rmq, storage, tmp_path, video_db):
    worker = run_transcoder()
    processed = rmq.tap("app.events", "media.processed")
    verified = upload(storage, clips.clip(tmp_path / "clip.mp4", 320, 240, seconds=2.0))
    # When the same event (same client_generated_id) arrives twice
    publish_verified(rmq, verified)
    publish_verified(rmq, verified)
    wait_for(lambda: log_lines(worker, "duplicate skipped", verified["client_generated_id"]), timeout=JOB_TIMEOUT,
             message="the second copy skipped")
    # Then one transcode, one media.processed, one idempotency key
    assert len(received(rmq, processed, 1)) == 1
    assert len(log_lines(worker, "video transcoded")) == 1
    assert query(video_db, "SELECT count(*) FROM idempotency_keys WHERE consumer = 'transcode'")[0][0] == 1


def test_worker_killed_mid_transcode_redoes_the_job_and_keeps_one_set_of_renditions(
        run_transcoder, rmq, storage, tmp_path, video_db):
    # Given a worker busy with ffmpeg on a longer clip
    first = run_transcoder()
    processed = rmq.tap("app.events", "media.processed")
    source = clips.clip(tmp_path / "long.mp4", 1280, 720, seconds=10.0, pattern="testsrc2")
    verified = upload(storage, source)
    user, video = verified["user_id"], verified["data"]["video_id"]
    publish_verified(rmq, verified)
    ffmpeg_pids = wait_for(lambda: ffmpeg_children(first.proc.pid), timeout=JOB_TIMEOUT, interval=0.05,
                           message="ffmpeg running")
    # When the worker is killed outright (OOM killer, node loss)
    first.kill()
    # Then its ffmpeg dies with it, and nothing was emitted or committed
    # (at once: left alone it would run on for seconds, writing into a dir nobody will clean)
    wait_for(lambda: not any(alive(p) for p in ffmpeg_pids), timeout=1.5, message="orphaned ffmpeg gone")
    assert rmq.depth(processed) == 0
    # and a new worker redoes the job from the start
    second = run_transcoder()
    (out,) = received(rmq, processed, 1)
    assert out["data"]["video_id"] == video
    assert len(log_lines(second, "video transcoded")) == 1
    # leaving exactly one set of renditions and one idempotency key
    assert sorted(storage.list(f"media/{user}/{video}/")) == [f"media/{user}/{video}/720p.mp4",
                                                             f"media/{user}/{video}/thumb.jpg"]
    assert query(video_db, "SELECT count(*) FROM idempotency_keys")[0][0] == 1
    assert_playable(local(storage, out["data"]["renditions"][0]["key"], tmp_path), 1280, 720, source)


def test_storage_outage_is_retried_with_delay_then_the_job_completes(run_transcoder, rmq, storage, tmp_path,
                                                                     s3_env):
    # Given a worker that reaches storage through a connection we can cut
    endpoint = s3_env["S3_ENDPOINT_URL"]
    proxy = TcpProxy("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))
    worker = run_transcoder(S3_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    processed, failed = rmq.tap("app.events", "media.processed"), rmq.tap("app.events", "media.failed")
    verified = upload(storage, clips.clip(tmp_path / "clip.mp4", 320, 240, seconds=2.0))
    try:
        # When storage is unreachable as the job starts
        proxy.cut()
        publish_verified(rmq, verified)
        wait_for(lambda: log_lines(worker, "event retried", verified["client_generated_id"]), timeout=JOB_TIMEOUT,
                 message="a delayed retry")
        proxy.restore()
        # Then the retry does the job: no media.failed for an outage of ours
        (out,) = received(rmq, processed, 1)
    finally:
        proxy.close()
    assert out["data"]["video_id"] == verified["data"]["video_id"]
    assert rmq.depth(failed) == 0 and rmq.depth("transcode.dead") == 0
    (retry,) = log_lines(worker, "event retried", verified["client_generated_id"])
    assert retry["retry_in_s"] >= 1 and "storage unavailable" in retry["error"]


# ---- the job and its pieces, without the broker ----------------------------------------------------

def test_limits_turn_into_failures_the_owner_can_read(storage, tmp_path):
    clip = clips.clip(tmp_path / "clip.mp4", 320, 240, seconds=3.0)
    verified = upload(storage, clip)
    user, video, key = verified["user_id"], verified["data"]["video_id"], verified["data"]["key"]
    for limits, code in ((Limits(max_duration_s=2), "too_long"), (Limits(max_dimension=300), "resolution_too_large"),
                         (Limits(timeout_s=0.05), "timeout"), (Limits(max_output_bytes=20_000), "transcode_failed")):
        with pytest.raises(Rejected) as caught:
            job.run(storage, limits, user, video, key, clip.stat().st_size)
        assert caught.value.code == code, caught.value.detail
    with pytest.raises(Rejected) as caught:  # replaced after the video worker checked it
        job.run(storage, Limits(), user, video, key, clip.stat().st_size + 1)
    assert caught.value.code == "source_missing"
    assert storage.list(f"media/{user}/") == []


def test_awkward_but_valid_uploads_still_make_a_video(storage, tmp_path):
    cases = {
        # MediaRecorder's WebM: the container does not say how long it is
        "recording": (clips.browser_recording(tmp_path / "rec.webm", seconds=2.0), (320, 240), 2.0),
        # the picture stops at 0.4 s, the sound goes on: no frame where the thumbnail was planned
        "short picture": (clips.clip(tmp_path / "short.mp4", 320, 240, seconds=0.4, audio_seconds=3.0),
                          (320, 240), 3.0),
    }
    for name, (path, size, duration) in cases.items():
        data = transcoded(storage, path)
        assert (data["width"], data["height"]) == size, name
        assert abs(data["duration_s"] - duration) <= 0.1, name
        thumb = clips.video_stream(clips.ffprobe(local(storage, data["thumbnail_key"], tmp_path)))
        assert (thumb["width"], thumb["height"]) == size, name


def test_a_phones_10_bit_hdr_hevc_portrait_video_becomes_an_8_bit_h264_portrait_rendition(storage, tmp_path):
    source = clips.phone_hdr(tmp_path / "IMG_0001.MOV")
    original = clips.video_stream(clips.ffprobe(source))
    assert (original["codec_name"], original["pix_fmt"], abs(clips.rotation(original))) == ("hevc", "yuv420p10le", 90)
    data = transcoded(storage, source)
    assert (data["width"], data["height"]) == (720, 1280)
    video = clips.video_stream(clips.ffprobe(local(storage, data["renditions"][0]["key"], tmp_path)))
    # 8-bit 4:2:0 H.264 is what every phone and browser plays
    assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == ("h264", "yuv420p", 720, 1280)


@pytest.mark.parametrize("transfer, levels", [
    ("arib-std-b67", (0.5, 0.75, 0.9, 1.0)),   # HLG, as iPhones record: reference white at 75 %
    ("smpte2084", (0.45, 0.58, 0.67, 0.75)),   # PQ (HDR10), as many Androids do: 203 cd/m² at 58 %
])
def test_hdr_video_becomes_sdr_with_its_whites_white_and_its_highlights_distinct(storage, tmp_path, transfer, levels):
    # grey stripes from mid-grey through reference white to highlights; shown as they were
    # (HDR values read as SDR), reference white came out as light grey: Y 190 (HLG), 148 (PQ)
    source = clips.hdr_stripes(tmp_path / "hdr.mov", transfer, levels)
    data = transcoded(storage, source)
    rendition = local(storage, data["renditions"][0]["key"], tmp_path)
    video = clips.video_stream(clips.ffprobe(rendition))
    assert (video["color_primaries"], video["color_transfer"], video["color_space"]) == ("bt709",) * 3
    mid, white, bright, peak = clips.stripe_lumas(rendition, len(levels))
    assert 120 <= mid <= 160 and 195 <= white <= 225  # limited range: 16 black, 235 white
    assert white < bright < peak <= 240                # rolled off, not clipped to one white
    thumb = clips.stripe_lumas(local(storage, data["thumbnail_key"], tmp_path), len(levels), "yuvj420p")
    assert 210 <= thumb[1] < thumb[3]                  # the JPEG (full range) shows the same picture


def test_of_several_sound_tracks_the_default_one_is_kept(storage, tmp_path):
    # a phone's two tracks: the default (quiet) one must be the one the rendition keeps
    source = clips.two_sound_tracks(tmp_path / "two.mp4")
    data = transcoded(storage, source)
    rendition = local(storage, data["renditions"][0]["key"], tmp_path)
    audio = [s for s in clips.ffprobe(rendition)["streams"] if s["codec_type"] == "audio"]
    assert [a["codec_name"] for a in audio] == ["aac"]
    assert clips.mean_volume_db(rendition) < -30  # the quiet track, not the loud first one


def test_an_upload_cut_short_after_its_index_is_refused(storage, tmp_path):
    # +faststart puts the index first: a cut file still probes, and promises 3 s it does not hold
    cut = clips.truncated(tmp_path / "cut.mp4", clips.clip(tmp_path / "whole.mp4", 320, 240, seconds=3.0,
                                                           faststart=True), fraction=0.4)
    verified = upload(storage, cut)
    with pytest.raises(Rejected) as caught:
        job.run(storage, Limits(), verified["user_id"], verified["data"]["video_id"], verified["data"]["key"],
                cut.stat().st_size)
    assert caught.value.code == "not_a_video" and "incomplete" in caught.value.reason
    assert storage.list(f"media/{verified['user_id']}/") == []


def test_a_source_key_outside_the_owners_upload_is_refused_before_any_work():
    owner, video = str(uuid.uuid4()), str(uuid.uuid4())
    someone_else = job.source_key(str(uuid.uuid4()), video)
    forged = envelope.from_dict(event("media.upload.verified", user_id=owner, source_service="video", data={
        "video_id": video, "key": someone_else, "size_bytes": 1000, "content_type": "video/mp4"}))
    with pytest.raises(Forbidden):  # dead-lettered: nobody's media prefix gets another user's video
        transcode.transcode_video(None, forged)


def _probe(streams, format_name="mov,mp4,m4a,3gp,3g2,mj2", duration="5.0"):
    return {"format": {"format_name": format_name, "duration": duration},
            "streams": [{"index": i, **s} for i, s in enumerate(streams)]}


VIDEO = {"codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080, "avg_frame_rate": "30/1"}
AUDIO = {"codec_type": "audio", "codec_name": "aac"}


@pytest.mark.parametrize("probed, code", [
    (_probe([VIDEO, AUDIO], format_name="hls"), "unsupported_format"),
    (_probe([VIDEO, AUDIO], format_name="avi"), "unsupported_format"),
    (_probe([AUDIO]), "not_a_video"),
    (_probe([{**VIDEO, "codec_name": "prores"}]), "unsupported_codec"),
    (_probe([VIDEO, VIDEO]), "too_many_streams"),
    (_probe([VIDEO] + [{"codec_type": "data"}] * 8), "too_many_streams"),
    (_probe([VIDEO], duration="601"), "too_long"),
    (_probe([{**VIDEO, "width": 8192, "height": 4320}]), "resolution_too_large"),
])
def test_probe_refuses_what_is_not_one_playable_video(probed, code):
    with pytest.raises(Rejected) as caught:
        probe.inspect(probed, Limits())
    assert caught.value.code == code and len(caught.value.reason) <= 300


APAC = {"codec_type": "audio", "codec_tag_string": "apac"}  # iPhone spatial audio: ffmpeg has no decoder


@pytest.mark.parametrize("streams, kept", [
    ([VIDEO, AUDIO], 1),
    ([VIDEO, AUDIO, {**AUDIO, "disposition": {"default": 1}}], 2),
    ([VIDEO, APAC, AUDIO], 2),
    ([VIDEO, {**APAC, "disposition": {"default": 1}}, AUDIO], 2),
    ([VIDEO, APAC], None),   # only undecodable sound: a silent video rather than a refusal
    ([VIDEO], None),
])
def test_the_sound_track_kept_is_one_ffmpeg_can_decode(streams, kept):
    assert probe.inspect(_probe(streams), Limits()).audio_index == kept


@pytest.mark.parametrize("video, size", [
    ({}, (1280, 720)),                                                        # 1080p → 720p
    ({"width": 1080, "height": 1920}, (720, 1280)),                           # portrait frames
    ({"side_data_list": [{"rotation": -90}]}, (720, 1280)),                   # display matrix
    ({"tags": {"rotate": "270"}}, (720, 1280)),                               # older rotate tag
    ({"side_data_list": [{"rotation": 180}]}, (1280, 720)),                   # upside down
    ({"width": 640, "height": 360}, (640, 360)),                              # never upscaled
    ({"width": 641, "height": 361}, (640, 360)),                              # even sides
    ({"width": 720, "height": 576, "sample_aspect_ratio": "16:11"}, (1046, 576)),  # anamorphic PAL
    ({"width": 3840, "height": 1080}, (1280, 360)),                           # ultra-wide: long side bound
])
def test_plan_fits_the_displayed_picture_into_720p(video, size):
    info = probe.inspect(_probe([{**VIDEO, **video}, AUDIO]), Limits())
    plan = commands.plan(info)
    assert (plan.width, plan.height) == size
    assert plan.thumbnail_at_s == 1.0 and plan.fps_cap is None


@pytest.mark.parametrize("rate, transfer, cap", [
    ("60/1", "bt709", None), ("240/1", "bt709", 60),         # slow motion is brought down to 60
    ("30000/1001", "arib-std-b67", None), ("60/1", "arib-std-b67", 30), ("60/1", "smpte2084", 30),
])
def test_frame_rate_cap_is_60_and_30_for_hdr_whose_frames_cost_more(rate, transfer, cap):
    info = probe.inspect(_probe([{**VIDEO, "avg_frame_rate": rate, "color_transfer": transfer}, AUDIO]), Limits())
    assert commands.plan(info).fps_cap == cap


def test_commands_are_argument_lists_confined_to_local_files():
    info = probe.inspect(_probe([{**VIDEO, "avg_frame_rate": "240/1"}, AUDIO], duration="0.6"), Limits())
    plan = commands.plan(info)
    assert plan.thumbnail_at_s == 0.3 and plan.fps_cap == 60  # short clip: an earlier frame
    argv = commands.transcode("/scratch/source", info, plan, Limits(threads=2), "/scratch/720p.mp4",
                              "/scratch/thumb.jpg")
    assert argv[0] == "ffmpeg" and "-nostdin" in argv
    before_input = argv[:argv.index("-i")]
    assert before_input[before_input.index("-protocol_whitelist") + 1] == "file"
    assert before_input[before_input.index("-f") + 1] == "mov"  # the demuxer ffprobe found, nothing else
    assert "-format_whitelist" in before_input
    assert argv[argv.index("-i") + 1] == "/scratch/source"
    assert argv.count("-threads") == 2 and all(argv[i + 1] == "2" for i, a in enumerate(argv) if a == "-threads")
    for flag, value in (("-vcodec", "libx264"), ("-preset", "veryfast"), ("-pix_fmt", "yuv420p"),
                        ("-acodec", "aac"), ("-movflags", "+faststart")):
        assert argv[argv.index(flag) + 1] == value
    graph = argv[argv.index("-filter_complex") + 1]
    assert "fps=60" in graph and "scale=1280:720" in graph and "trim=" in graph


def test_the_worker_starts_with_this_machines_ffmpeg():
    assert transcode.WORKER.startup is capabilities.check
    capabilities.check()  # Debian's ffmpeg: every filter and encoder the commands use


def test_an_ffmpeg_without_zscale_is_refused_at_start_not_per_video(tmp_path, monkeypatch):
    # a build without libzimg runs SDR videos and fails every HDR one, which its owner would be
    # told is damaged: the worker must refuse to start instead, naming what is missing
    real = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    listing = tmp_path / "filters.txt"
    listing.write_text("".join(line + "\n" for line in real.splitlines() if " zscale " not in line))
    fake = tmp_path / "ffmpeg"
    fake.write_text(f'#!/bin/sh\ncase "$2" in -filters) cat {listing} ;; *) exec {shutil.which("ffmpeg")} "$@" ;; esac\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="lacks filter zscale: install one built with libx264 and libzimg"):
        capabilities.check()


def test_sweep_removes_scratch_dirs_of_dead_jobs_only(tmp_path):
    with sandbox.scratch_dir(str(tmp_path)) as live:
        assert oct(os.stat(live).st_mode & 0o777) == "0o700"
        dead = tmp_path / f"{sandbox.PREFIX}dead"
        dead.mkdir()
        (dead / ".lock").touch()
        (dead / "source").write_bytes(b"x" * 1000)
        assert sandbox.sweep_stale(str(tmp_path), min_age_s=0) == [str(dead)]
        assert os.path.isdir(live) and not dead.exists()
    assert not os.path.exists(live)  # removed on the way out
