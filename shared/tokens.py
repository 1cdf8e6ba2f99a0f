"""Development bearer tokens, signed with the configured development key."""
from __future__ import annotations

import time
import uuid

import jwt

from shared.config import JwtConfig


def mint(user_id: str, cfg: JwtConfig, ttl_s: int = 3600) -> str:
    key = cfg.signing_key
    if not key:
        raise ValueError("no signing key: set JWT_SECRET (HS*) or JWT_PRIVATE_KEY (RS*/ES*/EdDSA)")
    now = int(time.time())
    claims = {"sub": str(uuid.UUID(user_id)), "iat": now, "exp": now + ttl_s}
    if cfg.issuer:
        claims["iss"] = cfg.issuer
    if cfg.audience:
        claims["aud"] = cfg.audience
    return jwt.encode(claims, key, algorithm=cfg.algorithm)
