"""Settings worker, feed side: who may read a feed, and access tokens for viewers who know the passcode.

Both events arrive on the query path (workers/runtime/queries.py), because they carry a passcode: it is
hashed or checked here and never written anywhere else, not even to a queue on disk.
"""
from __future__ import annotations

import functools
import time
import uuid
from datetime import datetime, timezone

from shared.envelope import rfc3339
from shared.errors import RateLimited
from shared.feedtokens import FeedTokenConfig, Minter
from workers.runtime.handler import Context, Refused, Request
from shared.logging import log
from workers.runtime.metrics import PASSCODE_LOCKOUTS
from workers.settings import access_limits
from workers.settings.passcodes import check_passcode, hash_passcode

# Changes take effect in the order this worker receives them, never by the client's clock: a
# phone whose clock runs fast must not pin an old passcode. Every change bumps passcode_version.
SET_VISIBILITY = """
INSERT INTO feed_visibility AS f (owner_id, mode, passcode_hash, passcode_version, version)
VALUES (%(owner)s, %(mode)s, %(hash)s, 1, %(version)s)
ON CONFLICT (owner_id) DO UPDATE SET
    mode = EXCLUDED.mode, passcode_hash = EXCLUDED.passcode_hash,
    passcode_version = f.passcode_version + 1, version = EXCLUDED.version, updated_at = now()
RETURNING mode, passcode_version
"""

# Every attempt of a viewer on a feed counts, before any hash is computed (feed_access_limits).
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
def limits() -> access_limits.Limits:
    return access_limits.Limits.from_env()


@functools.cache
def hash_budget() -> access_limits.HashBudget:
    return access_limits.HashBudget(limits().hashes_per_s)


def update_visibility(ctx: Context, request: Request) -> dict:
    event, owner = request.event, request.user_id
    cur = ctx.cursor
    if request.duplicate:  # sent again (the answer was lost): answer with what stands
        return {**_current(cur, owner), "duplicate": True}
    lim = limits()
    changes, retry_after = access_limits.count(cur, "visibility", owner, lim.changes_window_s)
    if changes > lim.changes_per_owner:  # raising rolls back the claim and this count
        raise RateLimited(f"more than {lim.changes_per_owner} visibility changes in "
                          f"{lim.changes_window_s // 60} minutes", retry_after_s=retry_after)
    passcode = request.params.get("passcode")
    if passcode:
        wait = hash_budget().take()
        if wait:
            raise RateLimited("too many passcode changes right now: try again in a moment",
                              retry_after_s=max(1, round(wait)))
    cur.execute(SET_VISIBILITY, {"owner": owner, "mode": request.params["mode"], "version": event.version_key,
                                 "hash": hash_passcode(passcode) if passcode else None})
    mode, version = cur.fetchone()
    ctx.emit("feed.visibility.changed", {"owner_id": owner, "mode": mode, "passcode_version": version},
             cause=event)
    return {"mode": mode, "passcode_version": version}


def _current(cur, owner: str) -> dict:
    cur.execute("SELECT mode, passcode_version FROM feed_visibility WHERE owner_id = %s", (owner,))
    row = cur.fetchone()
    return {"mode": row[0], "passcode_version": row[1]} if row else {"mode": "public", "passcode_version": 0}


def attempt_access(ctx: Context, request: Request) -> dict | Refused:
    viewer, owner = request.user_id, str(uuid.UUID(request.params["feed_owner_id"]))
    lim = limits()
    cur = ctx.cursor
    # every limit is checked before any hash: a slow hash on demand is a CPU weapon
    cur.execute(COUNT_ATTEMPT, {"viewer": viewer, "owner": owner, "window": lim.window_s})
    attempts, retry_after = cur.fetchone()
    if attempts > lim.attempts_per_viewer_feed:
        _log(request, owner, "rate_limited", checked=False)
        raise RateLimited(f"more than {lim.attempts_per_viewer_feed} passcode attempts for this feed in "
                          f"{lim.window_s // 60} minutes", retry_after_s=max(1, retry_after))
    cur.execute(FEED_MODE, (owner,))
    row = cur.fetchone()
    if row is None or row[0] == "public":
        _log(request, owner, "not_required", checked=False)
        return {"result": "not_required", "feed_owner_id": owner}
    # Counted as failures before the hash (their row locks make a feed's attempts take turns
    # across replicas) and given back if the passcode is right; a refusal rolls both back.
    feed_failures, feed_retry = access_limits.count(cur, "feed", owner, lim.window_s)
    viewer_failures, viewer_retry = access_limits.count(cur, "viewer", viewer, lim.window_s)
    if feed_failures > lim.failures_per_feed:
        _log(request, owner, "feed_locked", checked=False)
        raise RateLimited(f"this feed takes no more passcode attempts for {max(1, feed_retry // 60)} minutes "
                          "after too many wrong ones", retry_after_s=feed_retry)
    if viewer_failures > lim.failures_per_viewer:
        _log(request, owner, "viewer_locked", checked=False)
        raise RateLimited(f"more than {lim.failures_per_viewer} wrong passcodes in {lim.window_s // 60} minutes",
                          retry_after_s=viewer_retry)
    _, digest, version = row
    if not check_passcode(request.params["passcode"], digest):
        _log(request, owner, "denied", checked=True)
        if feed_failures == lim.failures_per_feed:  # this one locks the feed: its owner should know
            _announce_lock(ctx, request, owner, feed_failures, feed_retry)
        if viewer_failures == lim.failures_per_viewer:
            PASSCODE_LOCKOUTS.labels("settings", "viewer").inc()
        return Refused("access_denied", "wrong passcode")  # committed: it counts against the limits
    access_limits.uncount(cur, "feed", owner)
    access_limits.uncount(cur, "viewer", viewer)
    token, grant = minter().mint(viewer, owner, version)
    expires_at = rfc3339(datetime.fromtimestamp(grant.expires_at, timezone.utc))
    ctx.emit("feed.access.granted", {"viewer_id": viewer, "feed_owner_id": owner, "passcode_version": version,
                                     "expires_at": expires_at}, cause=request.event)
    _log(request, owner, "granted", checked=True)
    return {"result": "granted", "access_token": token, "expires_at": expires_at, "feed_owner_id": owner,
            "passcode_version": version}


def _announce_lock(ctx: Context, request: Request, owner: str, failures: int, retry_after_s: int) -> None:
    """Tell the owner (an outcome event) and the operator (a counter, a log line)."""
    locked_until = rfc3339(datetime.fromtimestamp(time.time() + retry_after_s, timezone.utc))
    ctx.emit("feed.access.locked", {"feed_owner_id": owner, "failed_attempts": failures,
                                    "window_s": limits().window_s, "locked_until": locked_until},
             cause=request.event, user_id=owner)
    PASSCODE_LOCKOUTS.labels("settings", "feed").inc()
    log.warning("feed locked after wrong passcodes", worker="settings", feed_owner_id=owner,
                failed_attempts=failures, locked_until=locked_until)


def _log(request: Request, owner: str, outcome: str, checked: bool) -> None:
    log.info("feed access attempt", worker="settings", user_id=request.user_id, feed_owner_id=owner,
             client_generated_id=request.event.id, outcome=outcome, passcode_checked=checked)


def check_keys() -> None:
    """At start: refuse to run without the signing key rather than fail the first viewer."""
    minter()
