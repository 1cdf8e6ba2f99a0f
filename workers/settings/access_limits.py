"""What bounds the passcode paths: how fast passcodes can be guessed, and how much hashing costs.

A passcode may be short, so one viewer's limit on one feed is not enough: an attacker rotates
accounts (a cap on failures per feed, from anyone) or feeds (a cap per viewer, on any feed).
Counters are fixed windows in settings_db, so every replica sees the same counts. A feed's
failure cap also locks out its honest viewers until the window ends: the price of a short
passcode not falling to a crowd of accounts (README, Security).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

# One statement counts `step` in the subject's window (a new window once the old one ended) and
# says how long the window still runs; its row lock makes concurrent counts take turns.
COUNT = """
INSERT INTO access_limits AS l (scope, subject_id, window_start, count)
VALUES (%(scope)s, %(subject)s, now(), %(step)s)
ON CONFLICT (scope, subject_id) DO UPDATE SET
    window_start = CASE WHEN l.window_start <= now() - %(window)s * interval '1 second'
                        THEN now() ELSE l.window_start END,
    count = CASE WHEN l.window_start <= now() - %(window)s * interval '1 second'
                 THEN %(step)s ELSE l.count + %(step)s END
RETURNING count, ceil(extract(epoch FROM l.window_start + %(window)s * interval '1 second' - now()))::int
"""

UNCOUNT = "UPDATE access_limits SET count = count - 1 WHERE scope = %s AND subject_id = %s AND count > 0"


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class Limits:
    attempts_per_viewer_feed: int = 5     # every attempt of one viewer on one feed
    failures_per_feed: int = 20           # wrong passcodes against one feed, from any viewer
    failures_per_viewer: int = 20         # wrong passcodes by one viewer, on any feed
    window_s: int = 900
    changes_per_owner: int = 10           # visibility changes by one owner ...
    changes_window_s: int = 3600          # ... in this window
    hashes_per_s: float = 2.0             # passcode hashes for visibility changes, per process

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(
            attempts_per_viewer_feed=_int("FEED_ACCESS_MAX_ATTEMPTS", cls.attempts_per_viewer_feed),
            failures_per_feed=_int("FEED_ACCESS_MAX_FAILURES_PER_FEED", cls.failures_per_feed),
            failures_per_viewer=_int("FEED_ACCESS_MAX_FAILURES_PER_VIEWER", cls.failures_per_viewer),
            window_s=_int("FEED_ACCESS_WINDOW_S", cls.window_s),
            changes_per_owner=_int("FEED_VISIBILITY_MAX_CHANGES", cls.changes_per_owner),
            changes_window_s=_int("FEED_VISIBILITY_WINDOW_S", cls.changes_window_s),
            hashes_per_s=float(os.environ.get("FEED_VISIBILITY_HASHES_PER_S") or cls.hashes_per_s),
        )


def count(cur, scope: str, subject: str, window_s: int, step: int = 1) -> tuple[int, int]:
    """(count in the current window, seconds until it ends)."""
    cur.execute(COUNT, {"scope": scope, "subject": subject, "window": window_s, "step": step})
    n, remaining = cur.fetchone()
    return n, max(1, remaining)


def uncount(cur, scope: str, subject: str) -> None:
    cur.execute(UNCOUNT, (scope, subject))


class HashBudget:
    """A token bucket for this process's visibility-change hashes.

    Each scrypt hash holds the settings worker's one query thread for ~50-80 ms; without a
    budget, changes from many accounts would starve the passcode checks queued behind them.
    """

    def __init__(self, per_second: float, burst: float | None = None):
        self.rate = per_second
        self.burst = burst if burst is not None else max(1.0, per_second)
        self._tokens, self._at = self.burst, time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when a hash may run now, else the seconds until one may."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate
