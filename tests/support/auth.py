"""What a test ingress needs to start (shared/secrets.py) and the bearer tokens it accepts."""
from __future__ import annotations

import secrets
import time

import jwt

from shared.config import JwtConfig

ISSUER = "spotter-test-auth"
AUDIENCE = "spotter-test"
EVENT_ID_KEY = secrets.token_urlsafe(32)  # 43 bytes: above the 32-byte minimum


def ingress_env(jwt_secret: str) -> dict:
    """JWT settings and EVENT_ID_KEY for an ingress process verifying tokens signed with jwt_secret."""
    return {"JWT_SECRET": jwt_secret, "JWT_ALGORITHM": "HS256", "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE,
            "EVENT_ID_KEY": EVENT_ID_KEY}


def jwt_config(jwt_secret: str) -> JwtConfig:
    """The JwtConfig shared.tokens.mint signs test tokens with: iss, aud and iat included."""
    return JwtConfig(secret=jwt_secret, issuer=ISSUER, audience=AUDIENCE)


def claims(sub: str, ttl_s: int = 300, **extra) -> dict:
    """Claims of a valid test token (sub, iss, aud, iat, exp), with `extra` added or replaced."""
    now = int(time.time())
    return {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl_s, **extra}


def encode(jwt_secret: str, sub: str, ttl_s: int = 300, algorithm: str = "HS256", **extra) -> str:
    return jwt.encode(claims(sub, ttl_s, **extra), jwt_secret, algorithm=algorithm)
