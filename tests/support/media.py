"""Videos as the video and transcode workers leave them: seeded rows, verified uploads."""
from __future__ import annotations

import uuid
from pathlib import Path

from shared.envelope import outcome_id
from workers.runtime.storage import Storage
from tests.support.db import query
from tests.support.events import dumps, event
from workers.transcode import job


def seed_post(db, owner: str, caption: str | None = None) -> str:
    """A ready video and its feed post, as media.processed leaves them."""
    video_id = str(uuid.uuid4())
    post_id = str(outcome_id(video_id, "feed.post.created"))
    query(db, "INSERT INTO videos (video_id, owner_id, status, source_key, filename, content_type, declared_size) "
              "VALUES (%s, %s, 'ready', %s, 'a.mp4', 'video/mp4', 1)", (video_id, owner, f"uploads/{owner}/{video_id}/source"))
    query(db, "INSERT INTO feed_posts (post_id, owner_id, video_id, caption) VALUES (%s, %s, %s, %s)",
          (post_id, owner, video_id, caption))
    return post_id


def upload(storage: Storage, path: Path, user: str | None = None, video: str | None = None) -> dict:
    """Put a file where the video worker would have verified it; the media.upload.verified it emits."""
    user, video = user or str(uuid.uuid4()), video or str(uuid.uuid4())
    key = job.source_key(user, video)
    if path.exists():
        storage.upload(str(path), key, "video/mp4")
    size = path.stat().st_size if path.exists() else 1000
    return event("media.upload.verified", user_id=user, source_service="video",
                 data={"video_id": video, "key": key, "size_bytes": size, "content_type": "video/mp4"})


def publish_verified(rmq, verified: dict) -> None:
    """media.upload.verified on app.events, for the transcode worker."""
    rmq.publish("app.events", "media.upload.verified", dumps(verified))
