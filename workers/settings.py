"""Settings worker: user and app settings, newest event wins whatever order replicas see them in."""
from __future__ import annotations

import orjson

from shared.envelope import Envelope
from shared.handler import Context, WorkerSpec

# The row keeps the version ("<timestamp>/<id>") of the event it holds; an older one never lands.
UPSERT_USER_SETTINGS = """
INSERT INTO user_settings (user_id, weight_value, weight_unit, age, training_days_per_week,
                           data, event_id, event_timestamp, version)
VALUES (%(user_id)s, %(weight_value)s, %(weight_unit)s, %(age)s, %(days)s,
        %(data)s, %(event_id)s, %(ts)s, %(version)s)
ON CONFLICT (user_id) DO UPDATE SET
    weight_value = EXCLUDED.weight_value, weight_unit = EXCLUDED.weight_unit, age = EXCLUDED.age,
    training_days_per_week = EXCLUDED.training_days_per_week, data = EXCLUDED.data,
    event_id = EXCLUDED.event_id, event_timestamp = EXCLUDED.event_timestamp,
    version = EXCLUDED.version, updated_at = now()
WHERE user_settings.version < EXCLUDED.version
"""

# A patch: each key keeps the version of the event that last set it (see migrations/settings).
MERGE_APP_SETTINGS = """
INSERT INTO app_settings (user_id, settings, versions)
VALUES (%(user_id)s, %(patch)s, merge_versions('{}', %(patch)s, %(version)s))
ON CONFLICT (user_id) DO UPDATE SET
    settings = merge_newer(app_settings.settings, app_settings.versions, EXCLUDED.settings, %(version)s),
    versions = merge_versions(app_settings.versions, EXCLUDED.settings, %(version)s),
    updated_at = now()
"""


def _as_of(event: Envelope) -> str:
    return event.timestamp.isoformat().replace("+00:00", "Z")


def submit_user_settings(ctx: Context, event: Envelope) -> None:
    data = event.data
    ctx.write(UPSERT_USER_SETTINGS, {
        "user_id": event.user_id, "weight_value": data["weight"]["value"], "weight_unit": data["weight"]["unit"],
        "age": data["age"], "days": data["training_days_per_week"], "data": orjson.dumps(data).decode(),
        "event_id": event.id, "ts": event.timestamp, "version": event.version_key})
    # Event-carried state: receivers keep the newest `as_of`, exactly as the table does.
    ctx.emit("user.settings.persisted", {"settings": data, "as_of": _as_of(event)}, cause=event)


def update_app_settings(ctx: Context, event: Envelope) -> None:
    ctx.write(MERGE_APP_SETTINGS, {"user_id": event.user_id, "patch": orjson.dumps(event.data).decode(),
                                   "version": event.version_key})
    ctx.emit("app.settings.persisted", {"settings": event.data, "as_of": _as_of(event)}, cause=event)


HANDLERS = {
    "user.settings.submitted": submit_user_settings,
    "app.settings.updated": update_app_settings,
}

WORKER = WorkerSpec(name="settings", database="settings", handlers=HANDLERS,
                    description="user and app settings")
