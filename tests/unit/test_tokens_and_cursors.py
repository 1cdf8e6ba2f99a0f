"""Feed access tokens (shared/feedtokens.py) and paging cursors (shared/paging.py): what a viewer
holds between requests, and what a forged, expired or tampered one gets."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone

import jwt
import pytest

from shared.errors import InvalidEvent, Unauthorized
from shared.feedtokens import FeedTokenConfig, Minter, FeedTokenVerifier, generate_keypair
from shared.paging import decode_cursor, encode_cursor

PRIVATE, PUBLIC = generate_keypair()
CFG = FeedTokenConfig(private_key=PRIVATE, public_key=PUBLIC)
VIEWER, OWNER = str(uuid.uuid4()), str(uuid.uuid4())


def refusal(token: str, cfg: FeedTokenConfig = CFG) -> str:
    with pytest.raises(Unauthorized) as refused:
        FeedTokenVerifier(cfg).verify(token)
    assert refused.value.reason == "unauthorized"
    return refused.value.detail


def test_a_minted_token_verifies_to_its_grant():
    token, grant = Minter(CFG).mint(VIEWER, OWNER, 3)
    assert FeedTokenVerifier(CFG).verify(token) == grant
    assert (grant.viewer_id, grant.feed_owner_id, grant.passcode_version) == (VIEWER, OWNER, 3)
    assert grant.expires_at - time.time() == pytest.approx(CFG.ttl_s, abs=5)


def test_an_expired_token_is_refused_as_expired():
    token, _ = Minter(replace(CFG, ttl_s=-60)).mint(VIEWER, OWNER, 1)  # beyond the 30 s leeway
    assert refusal(token) == "the feed access token has expired"


def test_a_tampered_token_is_refused():
    token, _ = Minter(CFG).mint(VIEWER, OWNER, 1)
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "feed_owner_id": str(uuid.uuid4())})
                                      .encode()).decode().rstrip("=")
    assert "Signature verification failed" in refusal(f"{header}.{forged}.{signature}")
    assert "invalid feed access token" in refusal(f"{header}.{payload}.{signature[:-4]}AAAA")


def test_a_token_of_another_key_audience_or_issuer_is_refused():
    other_private, _ = generate_keypair()
    token, _ = Minter(replace(CFG, private_key=other_private)).mint(VIEWER, OWNER, 1)
    assert "invalid feed access token" in refusal(token)
    token, _ = Minter(replace(CFG, audience="spotter-ingress")).mint(VIEWER, OWNER, 1)
    assert "audience" in refusal(token).lower()
    token, _ = Minter(replace(CFG, issuer="someone")).mint(VIEWER, OWNER, 1)
    assert "issuer" in refusal(token).lower()


def test_a_shared_secret_or_no_algorithm_cannot_be_configured():
    for algorithm in ("HS256", "none", "ROT13"):
        with pytest.raises(RuntimeError, match="asymmetric"):
            FeedTokenVerifier(replace(CFG, algorithm=algorithm))
    with pytest.raises(RuntimeError, match="FEED_TOKEN_PRIVATE_KEY"):
        Minter(replace(CFG, private_key=None))


def test_an_hs256_token_signed_with_the_public_key_is_refused():
    claims = {"sub": VIEWER, "feed_owner_id": OWNER, "passcode_version": 1, "iat": int(time.time()),
              "exp": int(time.time()) + 60, "iss": CFG.issuer, "aud": CFG.audience}
    # pyjwt will not sign HS256 with a PEM, so the forger's token is built by hand
    assert "invalid feed access token" in refusal(_hs256(claims, PUBLIC))


def _hs256(claims: dict, key: str) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    signing = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing}.{b64(hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest())}"


def test_a_token_missing_a_required_claim_or_with_a_malformed_one_is_refused():
    key = Minter(CFG)._key
    now = int(time.time())
    base = {"sub": VIEWER, "feed_owner_id": OWNER, "passcode_version": 1, "iat": now, "exp": now + 60,
            "iss": CFG.issuer, "aud": CFG.audience}
    without = jwt.encode({k: v for k, v in base.items() if k != "passcode_version"}, key, algorithm="EdDSA")
    assert "passcode_version" in refusal(without)
    malformed = jwt.encode({**base, "feed_owner_id": "not-a-uuid"}, key, algorithm="EdDSA")
    assert refusal(malformed) == "invalid feed access token: malformed claims"


def test_pems_from_one_env_line_are_accepted(monkeypatch):
    monkeypatch.setenv("FEED_TOKEN_PRIVATE_KEY", PRIVATE.replace("\n", "\\n"))
    monkeypatch.setenv("FEED_TOKEN_PUBLIC_KEY", PUBLIC.replace("\n", "\\n"))
    cfg = FeedTokenConfig.from_env()
    token, grant = Minter(cfg).mint(VIEWER, OWNER, 2)
    assert FeedTokenVerifier(cfg).verify(token) == grant


# ---- paging cursors ---------------------------------------------------------------------------------

def test_a_cursor_round_trips_its_place():
    at = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc)
    row = str(uuid.uuid4())
    cursor = encode_cursor(at, row)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor  # fits a query string as it is
    assert decode_cursor(cursor) == {"ts": at, "id": row}


@pytest.mark.parametrize("cursor", [
    "not base64 at all!",
    base64.urlsafe_b64encode(b"no separator").decode(),
    base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|not-a-uuid").decode(),
    base64.urlsafe_b64encode(f"yesterday|{uuid.uuid4()}".encode()).decode(),
    base64.urlsafe_b64encode(f"9999-12-31T23:59:59-14:00|{uuid.uuid4()}".encode()).decode(),
    base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
])
def test_a_forged_cursor_is_refused_as_the_cursor(cursor):
    with pytest.raises(InvalidEvent) as refused:
        decode_cursor(cursor)
    assert refused.value.field == "cursor"
    assert refused.value.detail == "cursor is not one this API gave out"
