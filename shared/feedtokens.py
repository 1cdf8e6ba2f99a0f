"""Feed access tokens (DESIGN §6): minted by the settings worker, verified by the video worker.

Asymmetric by default (EdDSA): the settings worker holds the private key, the video worker only
the public one, so nothing but the settings worker can mint. One algorithm is pinned on both
sides; exp, iat, iss, aud, sub, feed_owner_id and passcode_version are required.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from jwt.algorithms import get_default_algorithms

from shared.config import FeedTokenConfig
from shared.errors import Unauthorized

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "feed_owner_id", "passcode_version"]


@dataclass(frozen=True)
class Grant:
    viewer_id: str
    feed_owner_id: str
    passcode_version: int
    expires_at: int


def _algorithm(name: str):
    algorithm = get_default_algorithms().get(name)
    if algorithm is None or name == "none" or name.startswith("HS"):
        raise RuntimeError(f"FEED_TOKEN_ALGORITHM {name!r}: use an asymmetric algorithm (EdDSA, ES256, RS256)")
    return algorithm


class Minter:
    def __init__(self, cfg: FeedTokenConfig):
        if not cfg.private_key:
            raise RuntimeError("FEED_TOKEN_PRIVATE_KEY is not set: the settings worker cannot grant feed access")
        self.cfg = cfg
        self._key = _algorithm(cfg.algorithm).prepare_key(cfg.private_key)

    def mint(self, viewer_id: str, feed_owner_id: str, passcode_version: int) -> tuple[str, Grant]:
        now = int(time.time())
        grant = Grant(viewer_id, feed_owner_id, passcode_version, now + self.cfg.ttl_s)
        claims = {"sub": viewer_id, "feed_owner_id": feed_owner_id, "passcode_version": passcode_version,
                  "iat": now, "exp": grant.expires_at, "iss": self.cfg.issuer, "aud": self.cfg.audience,
                  "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self._key, algorithm=self.cfg.algorithm), grant


class FeedTokenVerifier:
    def __init__(self, cfg: FeedTokenConfig):
        if not cfg.public_key:
            raise RuntimeError("FEED_TOKEN_PUBLIC_KEY is not set: the video worker cannot check feed access")
        self.cfg = cfg
        self._key = _algorithm(cfg.algorithm).prepare_key(cfg.public_key)

    def verify(self, token: str) -> Grant:
        """The token's grant, or Unauthorized saying which check failed (never the token)."""
        try:
            claims = jwt.decode(token, self._key, algorithms=[self.cfg.algorithm], audience=self.cfg.audience,
                                issuer=self.cfg.issuer, leeway=self.cfg.leeway_s,
                                options={"require": REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the feed access token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid feed access token: {exc}") from None
        try:
            return Grant(str(uuid.UUID(claims["sub"])), str(uuid.UUID(claims["feed_owner_id"])),
                         int(claims["passcode_version"]), int(claims["exp"]))
        except (TypeError, ValueError, AttributeError):
            raise Unauthorized("invalid feed access token: malformed claims") from None


def generate_keypair() -> tuple[str, str]:
    """(private PEM, public PEM) of a new Ed25519 key, for development and tests."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public
