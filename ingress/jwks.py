"""The auth service's signing keys, from the JWKS it publishes (JWT_JWKS_URL), for ingress/auth.py.

PyJWKClient fetches the set (http(s) only, no redirects, JWT_JWKS_TIMEOUT_S), parses it and keeps
it for JWT_JWKS_CACHE_S (its `lifespan`; a failed fetch leaves the cached set alone). What it does
not do, and this module adds:

- Every fetch attempt counts against JWT_JWKS_REFRESH_MIN_S, failed ones too. PyJWKClient's own
  cooldown starts only on success, so during an outage every unknown `kid` (and, once the set has
  expired, every request) would go to the network and wait out its timeout.
- A set older than half its lifetime is refreshed by one request while the others keep using it,
  so an outage that starts just before expiry still gets half a lifetime of grace.
- A lookup waits behind a fetch only when it needs that fetch (PyJWKClient.get_signing_key holds
  one lock across its fetch, cache hits included).
- A key verifies only tokens of the pinned JWT_ALGORITHM (`unusable`).

Under gunicorn's gevent worker, which monkey-patches socket, ssl and threading before the app is
loaded, urllib's fetch and the lock here yield to other requests instead of blocking the process.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from jwt import PyJWK, PyJWKClient, PyJWKSet
from jwt.exceptions import PyJWTError

from ingress.batch import Rejected
from shared.config import JwtConfig
from shared.logging import log

# The JWK key type (RFC 7518 §6.1) each family of signing algorithms verifies with.
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class KeyRefused(Exception):
    """The token names no usable key: the caller's token is at fault (401)."""


class AuthUnavailable(Rejected):
    """The keys cannot be had (JWKS unreachable, nothing trusted cached): not the caller's fault,
    so 503 with Retry-After rather than a 401 that would send them to log in again."""

    def __init__(self, reason: str, retry_after_s: int):
        super().__init__(503, "auth_unavailable",
                         f"the auth service's signing keys (JWT_JWKS_URL) cannot be fetched: {reason}; retry later",
                         headers=(("Retry-After", str(retry_after_s)),))


def unusable(key: PyJWK, algorithm: str) -> str | None:
    """Why `key` must not verify tokens signed with `algorithm`; None when it may. A key without
    `alg` counts as PyJWT reads it: RS256 for RSA, by curve for EC and OKP."""
    if key.public_key_use not in ("sig", None):
        return f"is for {key.public_key_use!r}, not signatures"
    expected = KEY_TYPES.get(algorithm[:2])
    if key.key_type != expected:
        return f"is an {key.key_type} key, not {expected or 'an asymmetric key'}"
    if key.algorithm_name != algorithm:
        return f"is for {key.algorithm_name}, not {algorithm}"
    return None


class RefreshGate:
    """At most one fetch attempt per `interval_s`, whether it succeeds or fails."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s, self._clock = interval_s, clock
        self._last: float | None = None

    def take(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return True

    def retry_after_s(self) -> int:
        """Whole seconds until the next attempt may be made (at least 1)."""
        if self._last is None:
            return 1
        return max(1, math.ceil(self._last + self.interval_s - self._clock()))


def _redacted(url: str) -> str:
    """The URL for logs: no credentials or query a deployment may have put in it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


class JwksKeys:
    """The current key set of one ingress process, and the key a token's `kid` names in it."""

    def __init__(self, config: JwtConfig):
        self.algorithm = config.algorithm
        self.lifetime_s = config.jwks_cache_s
        self._client = PyJWKClient(config.jwks_url, cache_jwk_set=True, lifespan=config.jwks_cache_s,
                                   timeout=config.jwks_timeout_s, headers={"User-Agent": "spotter-ingress"})
        self._gate = RefreshGate(config.jwks_refresh_min_s)
        self._lock = threading.Lock()  # one fetch at a time (a gevent lock once gunicorn has patched)
        self._fetched_at = 0.0
        self._failing = False          # the last fetch attempt failed
        self._where = _redacted(config.jwks_url)

    def current(self) -> PyJWKSet | None:
        """The set trusted now (None when there is none), refreshed first when empty or past half its life."""
        cached = self._client.jwk_set_cache.get()  # None once older than JWT_JWKS_CACHE_S
        if cached is None:
            self._refresh(wait=True)
        elif time.monotonic() - self._fetched_at > self.lifetime_s / 2:
            self._refresh(wait=False)  # another request is refreshing: use what is cached meanwhile
        else:
            return cached
        return self._client.jwk_set_cache.get()

    def key(self, kid: str) -> tuple[PyJWK, PyJWKSet]:
        """The pinned key `kid` names, and the set it was found in. An unknown kid costs at most one
        refresh, and only when the gate allows one. KeyRefused (401) or AuthUnavailable (503)."""
        keys = self.current()
        if keys is None:
            raise AuthUnavailable("none fetched yet or the last ones expired", self._gate.retry_after_s())
        key = _find(keys, kid)
        if key is None:
            self._refresh(wait=True)  # a rotation: the new key may have been published since
            keys = self._client.jwk_set_cache.get()
            key = _find(keys, kid) if keys is not None else None
            if key is None:
                if keys is None or self._failing:  # the auth service may have rotated while we cannot see it
                    raise AuthUnavailable("the token's key is not among the cached ones", self._gate.retry_after_s())
                raise KeyRefused("no signing key with the token's kid")
        why = unusable(key, self.algorithm)
        if why:
            raise KeyRefused(f"the signing key {why}")
        return key, keys

    def _refresh(self, wait: bool) -> None:
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if not self._gate.take():
                return
            try:
                keys = self._client.get_jwk_set(refresh=True)
            except (PyJWTError, OSError, ValueError) as exc:  # unreachable, HTTP error, not JSON, no usable key
                self._failing = True
                log.warning("jwks fetch failed", url=self._where, error=f"{type(exc).__name__}: {exc}"[:300],
                            next_attempt_in_s=self._gate.retry_after_s(),
                            cached_keys=self._client.jwk_set_cache.get() is not None)
                return
            self._failing, self._fetched_at = False, time.monotonic()
            log.info("jwks fetched", url=self._where, kids=[k.key_id for k in keys.keys][:20])
        finally:
            self._lock.release()


def _find(keys: PyJWKSet, kid: str) -> PyJWK | None:
    for key in keys.keys:
        if key.key_id == kid:
            return key
    return None
