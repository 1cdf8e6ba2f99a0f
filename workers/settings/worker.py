"""Settings worker: user and app settings, newest event wins whatever order replicas see them in."""
from __future__ import annotations

import orjson

from shared.envelope import Envelope
from workers.runtime.handler import Context, Prepared, Rows, WorkerSpec
from workers.settings import feed_access

# The row keeps the version ("<timestamp>/<id>") of the event it holds; an older one never lands.
# A batch may hold several events of one user: DISTINCT ON keeps its newest.
UPSERT_USER_SETTINGS = Rows("""
INSERT INTO user_settings (user_id, weight_value, weight_unit, age, training_days_per_week,
                           data, event_id, event_timestamp, version)
SELECT DISTINCT ON (user_id) * FROM (VALUES %s) AS v (user_id, weight_value, weight_unit, age,
    training_days_per_week, data, event_id, event_timestamp, version)
ORDER BY user_id, version COLLATE "C" DESC
ON CONFLICT (user_id) DO UPDATE SET
    weight_value = EXCLUDED.weight_value, weight_unit = EXCLUDED.weight_unit, age = EXCLUDED.age,
    training_days_per_week = EXCLUDED.training_days_per_week, data = EXCLUDED.data,
    event_id = EXCLUDED.event_id, event_timestamp = EXCLUDED.event_timestamp,
    version = EXCLUDED.version, updated_at = now()
WHERE user_settings.version < EXCLUDED.version
""", template="(%s::uuid, %s::numeric, %s, %s::smallint, %s::smallint, %s::jsonb, %s::uuid, %s::timestamptz, %s)")

# A patch: each key keeps the version of the event that last set it (see migrations/settings).
MERGE_APP_SETTINGS = Prepared("merge_app_settings", ("uuid", "jsonb", "text"), """
INSERT INTO app_settings (user_id, settings, versions)
VALUES ($1, $2, merge_versions('{}', $2, $3))
ON CONFLICT (user_id) DO UPDATE SET
    settings = merge_newer(app_settings.settings, app_settings.versions, EXCLUDED.settings, $3),
    versions = merge_versions(app_settings.versions, EXCLUDED.settings, $3),
    updated_at = now()
""")


def submit_user_settings(ctx: Context, event: Envelope) -> None:
    data = event.data
    ctx.write_row(UPSERT_USER_SETTINGS, (
        event.user_id, data["weight"]["value"], data["weight"]["unit"], data["age"],
        data["training_days_per_week"], orjson.dumps(data).decode(), event.id, event.timestamp,
        event.version_key))


def update_app_settings(ctx: Context, event: Envelope) -> None:
    ctx.write(MERGE_APP_SETTINGS, (event.user_id, orjson.dumps(event.data).decode(), event.version_key))


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
                    startup=feed_access.check_keys, description="user and app settings, feed access")
