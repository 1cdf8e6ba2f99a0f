"""Settings worker: user and app settings, newest event wins whatever order replicas see them in."""
from __future__ import annotations

import orjson

from shared.envelope import Envelope
from workers.runtime.handler import Context, WorkerSpec
from workers.settings import feed_access

# The row keeps the version ("<timestamp>/<id>") of the event it holds; an older one never lands.
_COLUMNS = ("user_id, weight_value, weight_unit, age, training_days_per_week, data, event_id, event_timestamp, "
            "version")
_NEWEST_WINS = """
ON CONFLICT (user_id) DO UPDATE SET
    weight_value = EXCLUDED.weight_value, weight_unit = EXCLUDED.weight_unit, age = EXCLUDED.age,
    training_days_per_week = EXCLUDED.training_days_per_week, data = EXCLUDED.data,
    event_id = EXCLUDED.event_id, event_timestamp = EXCLUDED.event_timestamp,
    version = EXCLUDED.version, updated_at = now()
WHERE user_settings.version < EXCLUDED.version
"""
UPSERT_USER_SETTINGS = f"""
INSERT INTO user_settings ({_COLUMNS})
VALUES (%s::uuid, %s::numeric, %s, %s::smallint, %s::smallint, %s::jsonb, %s::uuid, %s::timestamptz, %s)
{_NEWEST_WINS}"""
# The same for a whole round trip's rows (WORKER.batched): newest wins in any order, and
# DISTINCT ON keeps a user's newest when the batch holds several of their events.
UPSERT_USER_SETTINGS_ROWS = f"""
INSERT INTO user_settings ({_COLUMNS})
SELECT DISTINCT ON (user_id) * FROM (
    SELECT (r->>0)::uuid, (r->>1)::numeric, r->>2, (r->>3)::smallint, (r->>4)::smallint, (r->>5)::jsonb,
           (r->>6)::uuid, (r->>7)::timestamptz, r->>8 FROM jsonb_array_elements(%s::jsonb) AS r
) AS v ({_COLUMNS})
ORDER BY user_id, version COLLATE "C" DESC
{_NEWEST_WINS}"""

# A patch: each key keeps the version of the event that last set it (see migrations/settings).
MERGE_APP_SETTINGS = """
INSERT INTO app_settings (user_id, settings, versions)
VALUES (%(user)s::uuid, %(settings)s::jsonb, merge_versions('{}', %(settings)s::jsonb, %(version)s::text))
ON CONFLICT (user_id) DO UPDATE SET
    settings = merge_newer(app_settings.settings, app_settings.versions, EXCLUDED.settings, %(version)s::text),
    versions = merge_versions(app_settings.versions, EXCLUDED.settings, %(version)s::text),
    updated_at = now()
"""


def submit_user_settings(ctx: Context, event: Envelope) -> None:
    data = event.data
    ctx.cursor.execute(UPSERT_USER_SETTINGS, (
        event.user_id, data["weight"]["value"], data["weight"]["unit"], data["age"],
        data["training_days_per_week"], orjson.dumps(data).decode(), event.id, event.timestamp,
        event.version_key))


def update_app_settings(ctx: Context, event: Envelope) -> None:
    ctx.cursor.execute(MERGE_APP_SETTINGS, {"user": event.user_id, "settings": orjson.dumps(event.data).decode(),
                                            "version": event.version_key})


HANDLERS = {
    "user.settings.submitted": submit_user_settings,
    "app.settings.updated": update_app_settings,
}

# Answered at once to a waiting caller, off settings.queries: these carry a passcode.
QUERIES = {
    "feed.visibility.updated": feed_access.update_visibility,
    "feed.access.attempt": feed_access.attempt_access,
}

WORKER = WorkerSpec(name="settings", database="settings", handlers=HANDLERS, queries=QUERIES,
                    startup=feed_access.check_keys, description="user and app settings, feed access",
                    batched={UPSERT_USER_SETTINGS: UPSERT_USER_SETTINGS_ROWS})
