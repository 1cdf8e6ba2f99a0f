"""Start-up refusal of missing, placeholder and weak secrets (README "Security").

Every process checks, before it does anything else, the secrets it uses: the ingress its bearer
token key (or JWT_JWKS_URL), EVENT_ID_KEY and the JWT issuer/audience; each worker its own keys (`PROCESSES`); and
every one that its RABBITMQ_URL is well-formed (it may hold credentials, and a bad entry must not wait for a failover). A
problem is logged as `refusing to start` naming the variable and the fix, never its value, and
the process exits 2 (like the other start-up refusals, workers/ops/preflight.py).

A variable that is not set is only a problem when the process requires it; one that is set must
not be a known placeholder (what k8s/secret.template.yaml and .env.example hold, and the usual
stand-ins) and, for HMAC keys, must be at least 32 bytes.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from shared.config import JwtConfig

MIN_HMAC_KEY_BYTES = 32   # RFC 7518 §3.2: an HS256 key at least as long as the hash output
DEFAULT_JWT_MAX_TTL_S = JwtConfig.max_ttl_s
ISS_AUD_WAIVER = "JWT_ALLOW_MISSING_ISS_AUD"
JWKS_DURATIONS = ("JWT_JWKS_CACHE_S", "JWT_JWKS_REFRESH_MIN_S", "JWT_JWKS_TIMEOUT_S")

# Whole values (compared case-insensitively, surrounding whitespace and quotes ignored).
PLACEHOLDERS = frozenset({
    "replace_me", "replace-me", "replaceme", "change-me-development-only", "changeme", "change-me",
    "change_me", "changeit", "secret", "secretkey", "secret-key", "secret_key", "supersecret", "mysecret",
    "jwt-secret", "jwt_secret", "password", "passwd", "pass", "example", "todo", "tbd", "fixme", "xxx",
    "placeholder", "dummy", "fake", "none", "null", "nil", "undefined", "default", "insecure",
    "your-secret", "your_secret", "yoursecret", "your-key", "your_key", "12345678", "123456",
})
# Parts that make any value a placeholder: template markers, and the ellipsis of an elided sample
# (".env.example"'s PEMs, "sk-..."). A random key holds none of them by chance.
PLACEHOLDER_PARTS = ("replace_me", "replace-me", "replaceme", "changeme", "change-me", "change_me",
                     "example", "placeholder", "…", "...")


@dataclass(frozen=True)
class Secret:
    name: str
    what: str
    hmac_key: bool = False   # a symmetric key: MIN_HMAC_KEY_BYTES at least


SECRETS: dict[str, Secret] = {s.name: s for s in (
    Secret("JWT_SECRET", "the HS* key of bearer tokens (shared with the auth service)", hmac_key=True),
    Secret("JWT_PUBLIC_KEY", "the RS*/ES*/EdDSA public key of bearer tokens (PEM)"),
    Secret("JWT_PRIVATE_KEY", "the development signing key of `workers token` (PEM)"),
    Secret("EVENT_ID_KEY", "the HMAC key of server-made event ids", hmac_key=True),
    Secret("FEED_TOKEN_PRIVATE_KEY", "the settings worker's feed access token signing key (PEM)"),
    Secret("FEED_TOKEN_PUBLIC_KEY", "the video worker's feed access token verification key (PEM)"),
    Secret("S3_ACCESS_KEY", "the object storage access key"),
    Secret("S3_SECRET_KEY", "the object storage secret key"),
    Secret("OPENWEBUI_API_KEY", "the ai worker's OpenWebUI bearer key"),
)}

# What each `workers run <name>` uses: (checked when set, required). The ingress: ingress_problems.
PROCESSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "settings": (("FEED_TOKEN_PRIVATE_KEY",), ("FEED_TOKEN_PRIVATE_KEY",)),
    "video": (("FEED_TOKEN_PUBLIC_KEY", "S3_ACCESS_KEY", "S3_SECRET_KEY"), ("FEED_TOKEN_PUBLIC_KEY",)),
    "transcode": (("S3_ACCESS_KEY", "S3_SECRET_KEY"), ()),
    "ai": (("OPENWEBUI_API_KEY",), ()),
    "dm": ((), ()),
    "machine": ((), ()),
    "notify": ((), ()),
    "program": ((), ()),
    "reminder": ((), ()),
}


@dataclass(frozen=True)
class Problem:
    """One reason not to start: the variable's name, what is wrong, and how to fix it (no value)."""

    variable: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.variable} {self.problem}"


def is_placeholder(value: str) -> bool:
    v = value.strip().strip("\"'").strip().lower()
    if not v:
        return True
    return (v in PLACEHOLDERS or any(part in v for part in PLACEHOLDER_PARTS)
            or len(set(v)) == 1                                  # "xxxxxxxx", "00000000"
            or (v.startswith("<") and v.endswith(">")))          # "<your key>"


def _hs(env: Mapping[str, str]) -> bool:
    return env.get("JWT_ALGORITHM", "HS256").startswith("HS")  # as shared/config.py JwtConfig reads it


def check_secrets(names: Iterable[str], required: Iterable[str] = (),
                  env: Mapping[str, str] | None = None) -> list[Problem]:
    """The problems of these secrets in `env` (default os.environ): unset ones only when required."""
    env = os.environ if env is None else env
    required = set(required)
    problems = []
    for name in dict.fromkeys([*names, *sorted(required)]):
        secret = SECRETS.get(name) or Secret(name, name)
        value = env.get(name) or ""
        if not value.strip():
            if name in required:
                problems.append(Problem(name, "is not set", f"set {name}: {secret.what}"))
            continue
        if is_placeholder(value):
            problems.append(Problem(name, "holds a placeholder, not a real value",
                                    f"set {name} to {secret.what}, or unset it if this process does not use it"))
        elif secret.hmac_key and (name != "JWT_SECRET" or _hs(env)) \
                and len(value.encode()) < MIN_HMAC_KEY_BYTES:
            problems.append(Problem(name, f"is shorter than {MIN_HMAC_KEY_BYTES} bytes",
                                    f"use at least {MIN_HMAC_KEY_BYTES} random bytes, e.g. "
                                    f"`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"))
    return problems


def waived(env: Mapping[str, str], name: str = ISS_AUD_WAIVER) -> bool | None:
    """True / False for an explicit true / false (or unset); None for anything else."""
    raw = (env.get(name) or "").strip().lower()
    return {"true": True, "false": False, "": False}.get(raw)


def ingress_problems(env: Mapping[str, str] | None = None) -> list[Problem]:
    """Everything the ingress refuses to start with: its secrets, JWT issuer/audience, JWT_MAX_TTL_S."""
    env = os.environ if env is None else env
    from jwt.algorithms import get_default_algorithms

    algorithm = env.get("JWT_ALGORITHM", "HS256")
    problems = []
    if algorithm == "none" or algorithm not in get_default_algorithms():
        problems.append(Problem("JWT_ALGORITHM", "is not a signing algorithm",
                                "set JWT_ALGORITHM to the auth service's algorithm (HS256, RS256, ES256, EdDSA)"))
    if (env.get("JWT_JWKS_URL") or "").strip():
        problems += jwks_problems(env)
        key = None  # the keys come from the auth service
    else:
        key = "JWT_SECRET" if _hs(env) else "JWT_PUBLIC_KEY"
    problems += check_secrets(["JWT_SECRET", "JWT_PUBLIC_KEY", "EVENT_ID_KEY"],
                              required=[k for k in (key, "EVENT_ID_KEY") if k], env=env)
    waiver = waived(env)
    if waiver is None:
        problems.append(Problem(ISS_AUD_WAIVER, "must be `true` or `false`",
                                f"set {ISS_AUD_WAIVER}=true only if the auth service's tokens carry no iss/aud"))
    for name, claim in (("JWT_ISSUER", "iss"), ("JWT_AUDIENCE", "aud")):
        value = env.get(name) or ""
        if not value.strip():
            if not waiver:
                problems.append(Problem(name, "is not set",
                                        f"set {name} to the `{claim}` the auth service puts in its tokens "
                                        f"(or {ISS_AUD_WAIVER}=true to accept tokens without it)"))
        elif is_placeholder(value):
            problems.append(Problem(name, "holds a placeholder, not a real value",
                                    f"set {name} to the `{claim}` the auth service puts in its tokens"))
    raw = (env.get("JWT_MAX_TTL_S") or "").strip()
    if raw and not (raw.isdigit() and int(raw) > 0):
        problems.append(Problem("JWT_MAX_TTL_S", "must be a positive number of seconds",
                                f"unset it (default {DEFAULT_JWT_MAX_TTL_S}) or set the longest token lifetime "
                                f"the auth service issues"))
    return problems


def jwks_problems(env: Mapping[str, str]) -> list[Problem]:
    """JWT_JWKS_URL as the key source: an http(s) URL, an asymmetric algorithm, no second key
    source beside it, and positive durations."""
    url = env["JWT_JWKS_URL"].strip()
    problems = []
    parts = urlsplit(url)
    if is_placeholder(url):
        problems.append(Problem("JWT_JWKS_URL", "holds a placeholder, not a real value",
                                "set JWT_JWKS_URL to the auth service's JWKS (e.g. .../.well-known/jwks.json)"))
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(Problem("JWT_JWKS_URL", "is not an http(s) URL",
                                "set JWT_JWKS_URL to the auth service's JWKS, https outside a trusted network"))
    if _hs(env):
        problems.append(Problem("JWT_ALGORITHM", "is an HS* algorithm but JWT_JWKS_URL is set",
                                "a JWKS publishes public keys: set JWT_ALGORITHM to the auth service's "
                                "RS256/ES256/EdDSA, or unset JWT_JWKS_URL and set JWT_SECRET"))
    if (env.get("JWT_PUBLIC_KEY") or "").strip():
        problems.append(Problem("JWT_PUBLIC_KEY", "is set as well as JWT_JWKS_URL",
                                "keep one key source: unset JWT_PUBLIC_KEY (the JWKS holds the keys) "
                                "or unset JWT_JWKS_URL"))
    for name in JWKS_DURATIONS:
        raw = (env.get(name) or "").strip()
        if not raw:
            continue
        try:
            ok = math.isfinite(float(raw)) and float(raw) > 0
        except ValueError:
            ok = False
        if not ok:
            problems.append(Problem(name, "must be a positive number of seconds",
                                    f"unset it for the default, or set seconds (docs/reference.md)"))
    return problems


def broker_problems(env: Mapping[str, str]) -> list[Problem]:
    """RABBITMQ_URL (one AMQP URL, or a cluster's, comma-separated): every entry usable."""
    from shared import broker
    from shared.config import Config

    try:
        broker.split_urls(env.get("RABBITMQ_URL", Config.rabbitmq_url))
    except broker.BrokerUrlError as exc:
        return [Problem("RABBITMQ_URL", f"is malformed: {exc}",
                        "set RABBITMQ_URL to amqp://user:password@host:5672/%2F, or several such URLs "
                        "separated by commas (the nodes of one cluster, docs/operations.md)")]
    return []


def process_problems(process: str, env: Mapping[str, str] | None = None) -> list[Problem]:
    """The problems of `ingress` or of the worker `process`."""
    env = os.environ if env is None else env
    if process == "ingress":
        return ingress_problems(env) + broker_problems(env)
    names, required = PROCESSES.get(process, ((), ()))
    return check_secrets(names, required, env) + broker_problems(env)


def refuse(problems: list[Problem], service: str, **fields) -> None:
    """Log each problem as `refusing to start` and exit 2; nothing when there is none."""
    if not problems:
        return
    from shared.logging import log, setup_logging

    setup_logging(service, os.environ.get("LOG_LEVEL") or "INFO")
    for p in problems:
        log.error("refusing to start", variable=p.variable, problem=p.problem, fix=p.fix, **fields)
    sys.exit(2)


def enforce(process: str, service: str | None = None) -> None:
    """At start: refuse (exit 2) unless `process`'s secrets and auth settings are usable."""
    refuse(process_problems(process), service or process, process=process)
