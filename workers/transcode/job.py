"""One transcode job: the uploaded object in; a 720p rendition and a thumbnail in storage out, and
the facts `media.processed` carries. Bad input raises Rejected; a storage outage, TransientError."""
from __future__ import annotations

import os
import signal
import stat
import time

import botocore.exceptions

from shared.errors import TransientError
from shared.logging import log
from workers.runtime.storage import Storage, StorageUnavailable
from workers.transcode import commands, probe, sandbox
from workers.transcode.errors import Rejected
from workers.transcode.limits import Limits

DAMAGED = "We could not process this video. It may be damaged or use features we do not support."


def source_key(user_id: str, video_id: str) -> str:
    return f"uploads/{user_id}/{video_id}/source"


def output_keys(user_id: str, video_id: str) -> tuple[str, str]:
    """Fixed per video: a redelivered job overwrites its own output, never adds a second set."""
    base = f"media/{user_id}/{video_id}"
    return f"{base}/720p.mp4", f"{base}/thumb.jpg"


def run(storage: Storage, limits: Limits, user_id: str, video_id: str, key: str, size_bytes: int) -> dict:
    timings = {}
    with sandbox.scratch_dir(limits.tmpdir) as tmp:
        source, rendition, thumbnail = (os.path.join(tmp, n) for n in ("source", "720p.mp4", "thumb.jpg"))
        with _timed(timings, "download_ms"):
            fetch(storage, key, source, size_bytes)
        with _timed(timings, "probe_ms"):
            info = probe.inspect(probe.ffprobe(source, tmp), limits)
        plan = commands.plan(info)
        with _timed(timings, "transcode_ms"):
            _ffmpeg(commands.transcode(source, info, plan, limits, rendition, thumbnail), tmp, limits)
            os.remove(source)  # the disk is the pod's: give it back early
            try:
                probed = probe.ffprobe(rendition, tmp)  # the rendition's own facts, not the source's
            except Rejected as exc:
                raise Rejected("transcode_failed", DAMAGED, exc.detail) from None
            out = _check_output(probed, info, limits)
            if not _nonempty(thumbnail):  # no frame at the chosen time (a video track shorter than the audio)
                _ffmpeg(commands.thumbnail(rendition, limits, thumbnail), tmp, limits)
                if not _nonempty(thumbnail):
                    raise Rejected("transcode_failed", DAMAGED, "no thumbnail frame")
        rendition_key, thumbnail_key = output_keys(user_id, video_id)
        with _timed(timings, "upload_ms"):
            put(storage, rendition, rendition_key, "video/mp4")
            put(storage, thumbnail, thumbnail_key, "image/jpeg")
        size = os.path.getsize(rendition)
    log.info("video transcoded", video_id=video_id, source_bytes=size_bytes, rendition_bytes=size,
             width=out["width"], height=out["height"], duration_s=out["duration_s"], **timings)
    return {"video_id": video_id,
            "renditions": [{"key": rendition_key, "content_type": "video/mp4", "width": out["width"],
                            "height": out["height"], "size_bytes": size, "codec": "h264"}],
            "thumbnail_key": thumbnail_key, "duration_s": out["duration_s"],
            "width": out["width"], "height": out["height"]}


def fetch(storage: Storage, key: str, path: str, size_bytes: int) -> None:
    try:
        storage.download(key, path)
    except StorageUnavailable as exc:
        raise TransientError(f"storage unavailable downloading {key}: {exc}") from exc
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise Rejected("source_missing", "The uploaded file is no longer there; please upload it again.",
                           key) from None
        raise TransientError(f"storage refused downloading {key}: {exc}") from exc  # credentials, policy: ops
    if os.path.getsize(path) != size_bytes:  # replaced after the video worker checked it
        raise Rejected("source_missing", "The uploaded file changed after it was checked; please upload it again.",
                       f"{os.path.getsize(path)} bytes, verified {size_bytes}")


def put(storage: Storage, path: str, key: str, content_type: str) -> None:
    # ffmpeg named this file: a link (to /proc/<worker>/environ, say) would have the worker upload
    # what ffmpeg's user cannot read. Race-free: the sandbox has no access to the dir after its run.
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise Rejected("transcode_failed", DAMAGED, f"{os.path.basename(path)} is not a regular file")
    try:
        storage.upload(path, key, content_type)
    except (StorageUnavailable, botocore.exceptions.ClientError) as exc:
        raise TransientError(f"storage unavailable uploading {key}: {exc}") from exc


def _ffmpeg(argv: list[str], tmp: str, limits: Limits) -> None:
    try:
        done = sandbox.run(argv, cwd=tmp, timeout_s=limits.timeout_s, max_file_bytes=limits.max_output_bytes,
                           cpu_s=limits.cpu_s)
    except sandbox.TimedOut as exc:
        raise Rejected("timeout", "Processing this video took too long.", str(exc)) from None
    if done.returncode == 0:
        return
    if "No space left on device" in done.stderr_tail:  # ours, not the video's
        raise TransientError(f"scratch disk full: {done.stderr_tail[-200:]}")
    if done.returncode == -signal.SIGXCPU:
        raise Rejected("timeout", "Processing this video took too long.", "RLIMIT_CPU")
    if done.returncode == -signal.SIGXFSZ:
        raise Rejected("transcode_failed", "The processed video would be too large.", "RLIMIT_FSIZE")
    raise Rejected("transcode_failed", DAMAGED, f"ffmpeg exit {done.returncode}: {done.stderr_tail}")


def _check_output(result: dict, source: probe.MediaInfo, limits: Limits) -> dict:
    """The rendition's own facts (what media.processed reports), and whether it is whole."""
    video = next((s for s in result.get("streams") or [] if s.get("codec_name") == "h264"), None)
    duration = probe.as_float((result.get("format") or {}).get("duration"))
    if video is None or not duration:
        raise Rejected("transcode_failed", DAMAGED, "rendition has no h264 stream or duration")
    if duration > limits.max_duration_s:  # the source did not say; now we know
        raise Rejected("too_long", f"This video is longer than {probe.minutes(limits.max_duration_s)}, the "
                       "longest accepted.")
    if source.duration_s and source.duration_s - duration > max(0.5, 0.05 * source.duration_s):
        raise Rejected("not_a_video", "This video file is incomplete: it ends before its announced length. "
                       "Please upload it again.", f"rendition {duration:.2f} s of {source.duration_s:.2f} s")
    return {"width": int(video["width"]), "height": int(video["height"]), "duration_s": round(duration, 3)}


def _nonempty(path: str) -> bool:
    return os.path.exists(path) and os.path.getsize(path) > 0


class _timed:
    def __init__(self, into: dict, name: str):
        self.into, self.name = into, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.into[self.name] = round((time.perf_counter() - self.start) * 1000, 1)
