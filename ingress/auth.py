"""Bearer JWT verification for ingress requests (DESIGN §6)."""
from __future__ import annotations

import time
import uuid

import jwt
from jwt.algorithms import get_default_algorithms

from ingress.jwks import JwksKeys, KeyRefused
from shared.config import JwtConfig


CACHE_SIZE = 4096


class BearerRefused(Exception):
    """No usable bearer token: answered 401, and the token itself is never logged."""


def canonical_user(value: str) -> str:
    """A user id in one form (lowercase, hyphenated) when it is a UUID; else unchanged."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return value


class BearerVerifier:
    """Checks signature (one pinned algorithm), exp, iss and aud when configured, sub, and a
    lifetime of at most max_ttl_s (exp - iat; exp - now without iat).

    The key is JWT_SECRET / JWT_PUBLIC_KEY, or with JWT_JWKS_URL the auth service's published key
    the token's `kid` names (ingress/jwks.py). Refusals raise BearerRefused (401); keys that cannot
    be had raise jwks.AuthUnavailable, itself the 503 answer."""

    def __init__(self, config: JwtConfig):
        algorithm = get_default_algorithms().get(config.algorithm)
        if algorithm is None or config.algorithm == "none":
            raise RuntimeError(f"JWT_ALGORITHM {config.algorithm!r} is not a signing algorithm")
        self._jwks: JwksKeys | None = None
        if config.jwks_url:
            if config.algorithm.startswith("HS"):
                raise RuntimeError("JWT_JWKS_URL publishes public keys: set JWT_ALGORITHM to the auth "
                                   "service's asymmetric algorithm (RS256, ES256, EdDSA, ...)")
            self._jwks = JwksKeys(config)
            self._key = None
        elif not config.verify_key:
            raise RuntimeError(f"no JWT verification key configured for {config.algorithm} "
                               f"(set {'JWT_SECRET' if config.algorithm.startswith('HS') else 'JWT_PUBLIC_KEY or JWT_JWKS_URL'})")
        else:
            self._key = algorithm.prepare_key(config.verify_key)  # parse a PEM once, not per request
        self.config = config
        required = ["exp", "sub"] + (["iss"] if config.issuer else []) + (["aud"] if config.audience else [])
        # Without a configured audience an `aud` claim is not ours to judge.
        self._options = {"require": required, "verify_aud": bool(config.audience)}
        # A client sends the same token with every request until it expires; verifying it costs
        # ~40-130 µs, a lookup nothing. Only tokens that passed every check are kept, each until
        # its own exp (with JWKS: while the key set that verified it is the current one), and the
        # whole cache is dropped when full.
        self._verified: dict[str, tuple[str, float, object]] = {}

    def subject(self, authorization: str | None) -> str:
        """The token's subject, from an `Authorization: Bearer <jwt>` header value."""
        if not authorization:
            raise BearerRefused("missing bearer token")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise BearerRefused("expected 'Authorization: Bearer <token>'")
        hit = self._verified.get(token)
        if hit is not None and time.time() < hit[1] and (self._jwks is None or hit[2] is self._jwks.current()):
            return hit[0]
        key, key_set = self._key_of(token)
        try:
            claims = jwt.decode(token, key, algorithms=[self.config.algorithm],
                                options=self._options, issuer=self.config.issuer,
                                audience=self.config.audience, leeway=self.config.leeway_s)
        except jwt.ExpiredSignatureError:
            raise BearerRefused("token expired") from None
        except jwt.InvalidTokenError as exc:
            # pyjwt's messages name the failed check, never the token's content
            raise BearerRefused(f"invalid token: {exc}") from None
        self._check_lifetime(claims)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise BearerRefused("token has no subject")
        subject = canonical_user(sub)
        if len(self._verified) >= CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (subject, float(claims["exp"]) + self.config.leeway_s, key_set)
        return subject

    def _key_of(self, token: str):
        """(key, the JWKS it came from or None) for this token; with JWKS, chosen by the header's
        kid, and only for a header that names the pinned algorithm (no fetch for anything else)."""
        if self._jwks is None:
            return self._key, None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise BearerRefused(f"invalid token: {exc}") from None
        if header.get("alg") != self.config.algorithm:
            raise BearerRefused(f"invalid token: its alg is not {self.config.algorithm}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BearerRefused("invalid token: its header names no kid (the JWKS key to verify it with)")
        try:
            return self._jwks.key(kid)
        except KeyRefused as exc:
            raise BearerRefused(f"invalid token: {exc}") from None

    def _check_lifetime(self, claims: dict) -> None:
        """A stolen long-lived token stays useful for as long as it lives: refuse any that lives
        longer than JWT_MAX_TTL_S. It counts from iat, or from now when iat is missing or in the
        future (pyjwt has checked that exp and iat are numbers)."""
        now = time.time()
        iat = claims.get("iat")
        start = now if iat is None else min(int(iat), now)
        if int(claims["exp"]) - start > self.config.max_ttl_s + self.config.leeway_s:
            raise BearerRefused("invalid token: lifetime exceeds JWT_MAX_TTL_S")
