"""The pure parts of JWKS verification: which published keys may verify the pinned algorithm, the
refresh rate limit, the start-up checks of JWT_JWKS_URL, and the refusals that need no fetch
(a fetch here would fail the test: the unit tier has no network)."""
from __future__ import annotations

import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt import PyJWK
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ingress.auth import BearerRefused, BearerVerifier
from ingress.jwks import RefreshGate, unusable
from shared import secrets
from shared.config import JwtConfig
from tests.support import auth

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_JWK = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
EC_JWK = ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)
RSA_PEM = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
ED_JWK = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True)
JWKS_ENV = {"JWT_JWKS_URL": "https://auth.internal/.well-known/jwks.json", "JWT_ALGORITHM": "RS256",
            "JWT_ISSUER": auth.ISSUER, "JWT_AUDIENCE": auth.AUDIENCE, "EVENT_ID_KEY": auth.EVENT_ID_KEY}


def test_a_published_key_verifies_only_its_own_algorithm():
    assert unusable(PyJWK({**RSA_JWK, "alg": "RS256", "use": "sig"}), "RS256") is None
    assert unusable(PyJWK(RSA_JWK), "RS256") is None                   # no alg: RS256, as PyJWT reads it
    assert unusable(PyJWK(EC_JWK), "ES256") is None                    # no alg: by its curve
    assert unusable(PyJWK(ED_JWK), "EdDSA") is None
    assert "not RS256" in unusable(PyJWK({**RSA_JWK, "alg": "RS512"}), "RS256")
    assert "not PS256" in unusable(PyJWK(RSA_JWK), "PS256")             # PS* needs an alg in the JWKS
    assert "EC key, not RSA" in unusable(PyJWK(EC_JWK), "RS256")
    assert "RSA key, not EC" in unusable(PyJWK(RSA_JWK), "ES256")
    assert "not signatures" in unusable(PyJWK({**RSA_JWK, "use": "enc"}), "RS256")
    # a symmetric key in a JWKS is never used: there is no HS algorithm to pin with a JWKS
    oct_key = PyJWK({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"})
    assert "oct key" in unusable(oct_key, "HS256") and "oct key" in unusable(oct_key, "RS256")


def test_the_refresh_gate_lets_one_attempt_through_per_interval():
    now = [100.0]
    gate = RefreshGate(10, clock=lambda: now[0])
    assert gate.retry_after_s() == 1
    assert gate.take() and not gate.take()
    now[0] += 3.2
    assert not gate.take() and gate.retry_after_s() == 7
    now[0] += 6.8
    assert gate.take() and gate.retry_after_s() == 10


def test_jwks_is_a_key_source_of_its_own_at_start():
    assert secrets.ingress_problems(JWKS_ENV) == []                     # no JWT_SECRET / JWT_PUBLIC_KEY needed
    assert secrets.ingress_problems({**JWKS_ENV, "JWT_JWKS_URL": "http://127.0.0.1:9/jwks.json",
                                     "JWT_JWKS_CACHE_S": "300", "JWT_JWKS_REFRESH_MIN_S": "0.5"}) == []


@pytest.mark.parametrize("change, variable", [
    ({"JWT_ALGORITHM": "HS256"}, "JWT_ALGORITHM"),
    ({"JWT_PUBLIC_KEY": RSA_PEM}, "JWT_PUBLIC_KEY"),                  # two key sources: which one?
    ({"JWT_JWKS_URL": "https://auth.example.com/.well-known/jwks.json"}, "JWT_JWKS_URL"),
    ({"JWT_JWKS_URL": "file:///etc/passwd"}, "JWT_JWKS_URL"),
    ({"JWT_JWKS_URL": "auth-service/jwks"}, "JWT_JWKS_URL"),
    ({"JWT_JWKS_CACHE_S": "0"}, "JWT_JWKS_CACHE_S"),
    ({"JWT_JWKS_REFRESH_MIN_S": "soon"}, "JWT_JWKS_REFRESH_MIN_S"),
    ({"JWT_JWKS_TIMEOUT_S": "-1"}, "JWT_JWKS_TIMEOUT_S"),
])
def test_a_jwks_setting_the_ingress_cannot_use_refuses_the_start(change, variable):
    assert variable in [p.variable for p in secrets.ingress_problems({**JWKS_ENV, **change})]


def test_the_verifier_refuses_an_hs_algorithm_with_a_jwks():
    with pytest.raises(RuntimeError, match="JWT_JWKS_URL publishes public keys"):
        BearerVerifier(JwtConfig(algorithm="HS256", secret="x" * 43, jwks_url=JWKS_ENV["JWT_JWKS_URL"]))


def test_tokens_the_pinned_algorithm_cannot_verify_are_refused_before_any_fetch():
    verifier = BearerVerifier(JwtConfig(algorithm="RS256", jwks_url="http://127.0.0.1:9/jwks.json",
                                        issuer=auth.ISSUER, audience=auth.AUDIENCE))
    claims = auth.claims(str(uuid.uuid4()))
    for token in (jwt.encode(claims, "x" * 43, algorithm="HS256", headers={"kid": "k"}),
                  jwt.encode(claims, None, algorithm="none", headers={"kid": "k"}),
                  jwt.encode(claims, EC_KEY, algorithm="ES256", headers={"kid": "k"}),
                  jwt.encode(claims, RSA_KEY, algorithm="RS256"),                 # no kid
                  "not-a-token"):
        with pytest.raises(BearerRefused, match="invalid token"):
            verifier.subject(f"Bearer {token}")
