"""Building events the way the frontend does."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson

from shared.envelope import rfc3339

SEED_USER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
SEED_DATA = {"weight": {"value": 93.5, "unit": "kg"}, "age": 28, "training_days_per_week": 4}


def event(event_type="user.settings.submitted", data=None, user_id=None, event_id=None,
          timestamp=None, **overrides) -> dict:
    body = {"schema_version": "1.0.0", "event_type": event_type,
            "client_generated_id": event_id or str(uuid.uuid4()), "user_id": user_id or str(uuid.uuid4()),
            "timestamp": timestamp or rfc3339(datetime.now(timezone.utc) - timedelta(seconds=1)),
            "source_service": "frontend", "data": SEED_DATA if data is None else data}
    body.update(overrides)
    return body


def seed_event() -> dict:
    return event(user_id=SEED_USER, event_id="550e8400-e29b-41d4-a716-446655440000",
                 timestamp="2025-11-05T10:00:00Z")


def dumps(obj) -> bytes:
    return orjson.dumps(obj)


def new_id() -> str:
    """A new id (a user, a video, a post): a random UUID as text."""
    return str(uuid.uuid4())
