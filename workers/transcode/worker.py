"""Transcode worker: a verified upload becomes a 720p H.264/AAC MP4 and a JPEG thumbnail in
storage (`media.processed`), or a reason its owner can read (`media.failed`).

One job at a time per process (prefetch 1): ffmpeg takes the CPU. The job runs on the runtime's
processing thread, inside the transaction that claimed the event's idempotency key, so a
duplicate is skipped and a job interrupted before commit is redone from the start; its output
keys are fixed per video, so a redo overwrites rather than adds.

Environment: MAX_VIDEO_DURATION_S (600), MAX_VIDEO_DIMENSION (4096), MAX_VIDEO_STREAMS (8),
TRANSCODE_TIMEOUT_S (600, per ffmpeg run), TRANSCODE_THREADS (1.5 × cores, at most 8),
TRANSCODE_MAX_OUTPUT_BYTES (2 GiB), TRANSCODE_TMPDIR (the system's), TRANSCODE_SANDBOX_USER (nobody:
ffmpeg's user when the worker runs as root) and the S3_* of workers.runtime.storage.
"""
from __future__ import annotations

import functools
import uuid

from shared.envelope import Envelope
from shared.errors import Forbidden
from workers.runtime.handler import Context, WorkerSpec
from shared.logging import log
from workers.runtime.storage import Storage, process_storage
from workers.transcode import capabilities, job, sandbox
from workers.transcode.errors import Rejected
from workers.transcode.limits import Limits


@functools.cache
def _runtime() -> tuple[Storage, Limits]:
    """Once per process: the S3 client (its connection pool is reused by every job) and the limits."""
    limits = Limits.from_env()
    for path in sandbox.sweep_stale(limits.tmpdir):
        log.warning("removed scratch dir of a killed job", path=path)
    return process_storage(), limits


def transcode_video(ctx: Context, event: Envelope) -> None:
    data = event.data
    video_id = str(uuid.UUID(data["video_id"]))
    if data["key"] != job.source_key(event.user_id, video_id):
        # the video worker names this key itself: anything else is a forged or broken event
        raise Forbidden(f"source key {data['key']!r} is not the upload of video {video_id} by its owner")
    storage, limits = _runtime()
    try:
        processed = job.run(storage, limits, event.user_id, video_id, data["key"], data["size_bytes"])
    except Rejected as exc:
        log.info("video rejected", video_id=video_id, code=exc.code, detail=exc.detail,
                 client_generated_id=event.id, user_id=event.user_id)
        ctx.emit("media.failed", {"video_id": video_id, "reason": exc.reason, "code": exc.code}, cause=event)
        return
    ctx.emit("media.processed", processed, cause=event)


HANDLERS = {
    "media.upload.verified": transcode_video,
}

WORKER = WorkerSpec(name="transcode", database="video", handlers=HANDLERS, prefetch=1, max_batch=1,
                    startup=capabilities.check,
                    description="uploaded videos → 720p H.264/AAC MP4 and a thumbnail")
