"""Bearer JWT verification at the ingress (ingress/auth.py), with tokens encoded by pyjwt."""
from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ingress.auth import BearerRefused, BearerVerifier, canonical_user
from shared.config import JwtConfig
from tests.support import auth

SECRET = "s" * 43
USER = "7C9E6679-7425-40DE-944B-E07FC1F90AE7"


@pytest.fixture
def verifier() -> BearerVerifier:
    return BearerVerifier(auth.jwt_config(SECRET))


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refusal(verifier: BearerVerifier, header: str | None) -> str:
    with pytest.raises(BearerRefused) as refused:
        verifier.subject(header)
    return str(refused.value)


def test_a_valid_token_gives_its_subject_in_canonical_form(verifier):
    assert verifier.subject(bearer(auth.encode(SECRET, USER))) == USER.lower()
    assert verifier.subject("bearer  " + auth.encode(SECRET, "service-account")) == "service-account"


def test_missing_or_malformed_authorization_is_refused(verifier):
    assert refusal(verifier, None) == "missing bearer token"
    assert "expected 'Authorization: Bearer" in refusal(verifier, "Basic dXNlcjpwYXNz")
    assert "expected" in refusal(verifier, "Bearer ")


def test_an_expired_token_is_refused_as_expired(verifier):
    past = int(time.time()) - 3600
    token = auth.encode(SECRET, USER, iat=past - 60, exp=past)
    assert refusal(verifier, bearer(token)) == "token expired"


def test_a_token_for_another_audience_or_issuer_is_refused(verifier):
    assert refusal(verifier, bearer(auth.encode(SECRET, USER, aud="someone-else"))) == \
        "invalid token: Audience doesn't match"
    assert "issuer" in refusal(verifier, bearer(auth.encode(SECRET, USER, iss="evil-auth"))).lower()


def test_a_token_signed_with_another_key_or_algorithm_is_refused(verifier):
    assert "invalid token" in refusal(verifier, bearer(auth.encode("x" * 43, USER)))
    assert "invalid token" in refusal(verifier, bearer(auth.encode(SECRET, USER, algorithm="HS512")))
    unsigned = jwt.encode(auth.claims(USER), None, algorithm="none")
    assert "invalid token" in refusal(verifier, bearer(unsigned))
    # an asymmetric token cannot pass as HS256 either (no algorithm confusion)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    assert "invalid token" in refusal(verifier, bearer(jwt.encode(auth.claims(USER), pem, algorithm="EdDSA")))


def test_a_token_without_subject_or_expiry_is_refused(verifier):
    no_exp = jwt.encode({k: v for k, v in auth.claims(USER).items() if k != "exp"}, SECRET, algorithm="HS256")
    assert "exp" in refusal(verifier, bearer(no_exp))
    no_sub = jwt.encode({k: v for k, v in auth.claims(USER).items() if k != "sub"}, SECRET, algorithm="HS256")
    assert "sub" in refusal(verifier, bearer(no_sub))


def test_a_token_living_longer_than_the_maximum_is_refused():
    verifier = BearerVerifier(JwtConfig(secret=SECRET, issuer=auth.ISSUER, audience=auth.AUDIENCE, max_ttl_s=3600))
    assert verifier.subject(bearer(auth.encode(SECRET, USER, ttl_s=3600)))
    assert "JWT_MAX_TTL_S" in refusal(verifier, bearer(auth.encode(SECRET, USER, ttl_s=3 * 3600)))


def test_no_key_or_the_none_algorithm_fails_at_start_not_per_request():
    with pytest.raises(RuntimeError, match="JWT_SECRET"):
        BearerVerifier(JwtConfig(secret=None))
    with pytest.raises(RuntimeError, match="not a signing algorithm"):
        BearerVerifier(JwtConfig(algorithm="none", public_key="x"))


def test_canonical_user_lowercases_uuids_only():
    assert canonical_user(USER) == USER.lower()
    assert canonical_user("Alice") == "Alice"
