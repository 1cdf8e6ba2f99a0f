"""Settings worker, feed side: who may read a feed, and access tokens for viewers who know the passcode.

Both events arrive on the query path (shared/queries.py), because they carry a passcode: it is
hashed or checked here and never written anywhere else, not even to a queue on disk.
"""
from __future__ import annotations

import functools
import os
import uuid
from datetime import datetime, timezone

from shared.envelope import rfc3339
from shared.errors import RateLimited
from shared.feedtokens import FeedTokenConfig, Minter
from shared.handler import Context, Refused, Request
from shared.logging import log
from workers.passcodes import check_passcode, hash_passcode

# Newest update (by event timestamp) wins; every accepted one bumps passcode_version.
SET_VISIBILITY = """
INSERT INTO feed_visibility AS f (owner_id, mode, passcode_hash, passcode_version, version)
VALUES (%(owner)s, %(mode)s, %(hash)s, 1, %(version)s)
ON CONFLICT (owner_id) DO UPDATE SET
    mode = EXCLUDED.mode, passcode_hash = EXCLUDED.passcode_hash,
    passcode_version = f.passcode_version + 1, version = EXCLUDED.version, updated_at = now()
WHERE f.version < EXCLUDED.version
RETURNING mode, passcode_version
"""

# One statement counts the attempt and says how long until the window ends; the row lock makes
# concurrent attempts of one viewer on one feed take turns, so none slips past the limit.
COUNT_ATTEMPT = """
INSERT INTO feed_access_limits AS l (viewer_id, owner_id, window_start, attempts)
VALUES (%(viewer)s, %(owner)s, now(), 1)
ON CONFLICT (viewer_id, owner_id) DO UPDATE SET
    window_start = CASE WHEN l.window_start <= now() - %(window)s * interval '1 second'
                        THEN now() ELSE l.window_start END,
    attempts = CASE WHEN l.window_start <= now() - %(window)s * interval '1 second'
                    THEN 1 ELSE l.attempts + 1 END
RETURNING attempts, ceil(extract(epoch FROM l.window_start + %(window)s * interval '1 second' - now()))::int
"""

FEED_MODE = "SELECT mode, passcode_hash, passcode_version FROM feed_visibility WHERE owner_id = %s"


@functools.cache
def minter() -> Minter:
    return Minter(FeedTokenConfig.from_env())


@functools.cache
def attempt_limit() -> tuple[int, int]:
    """(attempts, window in seconds) per viewer and feed."""
    return (int(os.environ.get("FEED_ACCESS_MAX_ATTEMPTS") or 5),
            int(os.environ.get("FEED_ACCESS_WINDOW_S") or 900))


def update_visibility(ctx: Context, request: Request) -> dict:
    event, owner = request.event, request.user_id
    cur = ctx.cur
    if not ctx.claim(event):  # sent again (the answer was lost): answer with what stands
        return {**_current(cur, owner), "duplicate": True}
    passcode = request.params.get("passcode")
    cur.execute(SET_VISIBILITY, {"owner": owner, "mode": request.params["mode"], "version": event.version_key,
                                 "hash": hash_passcode(passcode) if passcode else None})
    row = cur.fetchone()
    if row is None:  # a newer update landed first: it stands
        return {**_current(cur, owner), "superseded": True}
    mode, version = row
    ctx.emit("feed.visibility.changed", {"owner_id": owner, "mode": mode, "passcode_version": version},
             cause=event)
    return {"mode": mode, "passcode_version": version}


def _current(cur, owner: str) -> dict:
    cur.execute("SELECT mode, passcode_version FROM feed_visibility WHERE owner_id = %s", (owner,))
    row = cur.fetchone()
    return {"mode": row[0], "passcode_version": row[1]} if row else {"mode": "public", "passcode_version": 0}


def attempt_access(ctx: Context, request: Request) -> dict | Refused:
    viewer, owner = request.user_id, str(uuid.UUID(request.params["feed_owner_id"]))
    limit, window = attempt_limit()
    cur = ctx.cur
    cur.execute(COUNT_ATTEMPT, {"viewer": viewer, "owner": owner, "window": window})
    attempts, retry_after = cur.fetchone()
    if attempts > limit:  # before any hash: a slow hash on demand is a CPU weapon
        _log(request, owner, "rate_limited", checked=False)
        raise RateLimited(f"more than {limit} passcode attempts for this feed in {window // 60} minutes",
                          retry_after_s=max(1, retry_after))
    cur.execute(FEED_MODE, (owner,))
    row = cur.fetchone()
    if row is None or row[0] == "public":
        _log(request, owner, "not_required", checked=False)
        return {"result": "not_required", "feed_owner_id": owner}
    _, digest, version = row
    if not check_passcode(request.params["passcode"], digest):
        _log(request, owner, "denied", checked=True)
        return Refused("access_denied", "wrong passcode")  # committed: it counts against the limit
    token, grant = minter().mint(viewer, owner, version)
    expires_at = rfc3339(datetime.fromtimestamp(grant.expires_at, timezone.utc))
    ctx.emit("feed.access.granted", {"viewer_id": viewer, "feed_owner_id": owner, "passcode_version": version,
                                     "expires_at": expires_at}, cause=request.event)
    _log(request, owner, "granted", checked=True)
    return {"result": "granted", "access_token": token, "expires_at": expires_at, "feed_owner_id": owner,
            "passcode_version": version}


def _log(request: Request, owner: str, outcome: str, checked: bool) -> None:
    log.info("feed access attempt", worker="settings", user_id=request.user_id, feed_owner_id=owner,
             client_generated_id=request.event.id, outcome=outcome, passcode_checked=checked)


def check_keys() -> None:
    """At start: refuse to run without the signing key rather than fail the first viewer."""
    minter()
