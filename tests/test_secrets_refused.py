"""Placeholder, missing and weak secrets: every process refuses to start (shared/secrets.py).

The attack: production started with a value copied from k8s/secret.template.yaml (`REPLACE_ME`)
or .env.example (`change-me-development-only`), with a guessable HS key, or with its keys taken
from a `.env` lying in the working directory. Each such process must exit 2 with a
`refusing to start` line naming the variable, never its value. Also: a bearer token living
longer than JWT_MAX_TTL_S is refused (tests/ingress/test_ingress.py posts such tokens to a real
ingress; here the BearerVerifier alone).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest

from ingress.auth import BearerRefused, BearerVerifier
from shared import secrets
from shared.config import Config, JwtConfig
from tests.support import auth
from tests.support.rabbit import wait_for
from tests.support.http import ready
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[1]
GOOD_KEY = "k" * 7 + "0123456789abcdefghijklmnopqrstuvwxyz"  # 43 bytes, not a placeholder
PLACEHOLDERS = ["REPLACE_ME", "change-me-development-only", "changeme", "secret", "password", "example",
                "TODO", "xxx", "replace_me_with_a_32_byte_random_string_please"]


# ---- running a process that should refuse ------------------------------------------------------
def start(args: list[str], env: dict, cwd: Path = REPO, timeout: float = 30) -> tuple[int | None, str]:
    """(exit code, output) of `workers <args>`; None when it was still running after `timeout`."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("JWT_", "FEED_TOKEN_", "S3_", "OPENWEBUI_")) and k not in ("EVENT_ID_KEY",
                                                                                            "SPOTTER_ENV_FILE")}
    proc = subprocess.Popen([sys.executable, "-m", "workers", *args], env={**clean, "PYTHONUNBUFFERED": "1", **env},
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out.decode(errors="replace")


def refusals(output: str) -> dict[str, dict]:
    """variable → its `refusing to start` line."""
    found = {}
    for raw in output.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("msg") == "refusing to start" and "variable" in line:
            found[line["variable"]] = line
    return found


def assert_refused(code, output: str, variable: str, value: str | None = None) -> dict:
    assert code == 2, f"expected exit 2 (refusing to start), got {code}:\n{output[-3000:]}"
    lines = refusals(output)
    assert variable in lines, f"no `refusing to start` line naming {variable}:\n{output[-3000:]}"
    if value:
        assert value not in output, f"the value of {variable} was printed"
    return lines[variable]


def ingress_env(**overrides) -> dict:
    """A complete, valid ingress environment (port free, broker unused), with overrides; None unsets."""
    env = {**auth.ingress_env(GOOD_KEY), "PORT": str(free_port()), "RABBITMQ_URL": "amqp://127.0.0.1:1/%2F"}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


# ---- the ingress -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, why", [
    ("REPLACE_ME", "placeholder"),                     # k8s/secret.template.yaml
    ("change-me-development-only", "placeholder"),     # .env.example
    ("short-secret-20bytes", "32 bytes"),              # 20 bytes: guessable offline from any token
])
def test_serve_refuses_a_placeholder_or_short_jwt_secret(value, why):
    code, output = start(["serve"], ingress_env(JWT_SECRET=value))
    line = assert_refused(code, output, "JWT_SECRET", value)
    assert why in line["problem"]


@pytest.mark.parametrize("value", [None, "REPLACE_ME", "0123456789abcdef"])
def test_serve_refuses_without_a_usable_event_id_key(value):
    code, output = start(["serve"], ingress_env(EVENT_ID_KEY=value))
    assert_refused(code, output, "EVENT_ID_KEY", value)


def test_gunicorn_started_directly_refuses_too():
    env = {**os.environ, **ingress_env(JWT_SECRET="REPLACE_ME")}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn_conf.py", "ingress.app:application"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert_refused(done.returncode, done.stdout + done.stderr, "JWT_SECRET", "REPLACE_ME")


def test_an_asymmetric_algorithm_needs_its_public_key():
    code, output = start(["serve"], ingress_env(JWT_ALGORITHM="RS256", JWT_SECRET=None, JWT_PUBLIC_KEY="REPLACE_ME"))
    assert_refused(code, output, "JWT_PUBLIC_KEY", "REPLACE_ME")


@pytest.mark.parametrize("missing", ["JWT_ISSUER", "JWT_AUDIENCE"])
def test_serve_refuses_without_issuer_or_audience(missing):
    code, output = start(["serve"], ingress_env(**{missing: None}))
    line = assert_refused(code, output, missing)
    assert "JWT_ALLOW_MISSING_ISS_AUD" in line["fix"]


def test_serve_refuses_the_placeholder_issuer_of_config_env_even_when_waived():
    code, output = start(["serve"], ingress_env(JWT_ISSUER="REPLACE_ME", JWT_ALLOW_MISSING_ISS_AUD="true"))
    assert_refused(code, output, "JWT_ISSUER")


def test_serve_refuses_a_waiver_that_is_not_true_or_false():
    code, output = start(["serve"], ingress_env(JWT_ISSUER=None, JWT_ALLOW_MISSING_ISS_AUD="yes please"))
    assert_refused(code, output, "JWT_ALLOW_MISSING_ISS_AUD")


def test_serve_without_issuer_and_audience_starts_when_explicitly_waived(vhost):
    env = ingress_env(JWT_ISSUER=None, JWT_AUDIENCE=None, JWT_ALLOW_MISSING_ISS_AUD="true", RABBITMQ_URL=vhost)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JWT_")}
    proc = subprocess.Popen([sys.executable, "-m", "workers", "serve"], env={**clean, **env}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: ready(int(env["PORT"])) or proc.poll() is not None, timeout=30, message="ingress up")
        assert proc.poll() is None, f"the waived ingress exited with {proc.returncode}"
    finally:
        proc.terminate()
        proc.wait(30)


# ---- the workers -------------------------------------------------------------------------------
@pytest.mark.parametrize("worker, variable", [
    ("settings", "FEED_TOKEN_PRIVATE_KEY"),
    ("video", "FEED_TOKEN_PUBLIC_KEY"),
    ("video", "S3_SECRET_KEY"),
    ("video", "S3_ACCESS_KEY"),
    ("transcode", "S3_SECRET_KEY"),
    ("ai", "OPENWEBUI_API_KEY"),
])
def test_a_worker_refuses_a_placeholder_key(worker, variable, feed_keys, vhost):
    env = {"RABBITMQ_URL": vhost, "FEED_TOKEN_PRIVATE_KEY": feed_keys[0], "FEED_TOKEN_PUBLIC_KEY": feed_keys[1],
           "S3_ACCESS_KEY": "DO00ACCESSKEYLOOKINGREAL", "S3_SECRET_KEY": GOOD_KEY, "HEALTH_PORT": "0",
           variable: "REPLACE_ME"}
    code, output = start(["run", worker], env)
    assert_refused(code, output, variable, "REPLACE_ME")


def test_workers_run_does_not_read_a_dot_env_in_its_directory(tmp_path, feed_keys, vhost, settings_db):
    # the settings worker's key only in ./.env: the worker must not find it there
    escaped = feed_keys[0].strip().replace("\n", "\\n")
    (tmp_path / ".env").write_text(f'FEED_TOKEN_PRIVATE_KEY="{escaped}"\n')
    code, output = start(["run", "settings"], {"RABBITMQ_URL": vhost, "SETTINGS_DATABASE_URL": settings_db,
                                               "HEALTH_PORT": "0"}, cwd=tmp_path)
    line = assert_refused(code, output, "FEED_TOKEN_PRIVATE_KEY")
    assert line["problem"] == "is not set"


def test_workers_serve_does_not_read_a_dot_env_in_its_directory(tmp_path):
    (tmp_path / ".env").write_text(f"JWT_SECRET={GOOD_KEY}\n")
    code, output = start(["serve"], ingress_env(JWT_SECRET=None), cwd=tmp_path)
    line = assert_refused(code, output, "JWT_SECRET")
    assert line["problem"] == "is not set"


def test_workers_token_still_reads_dot_env_and_signs_iss_aud_iat(tmp_path):
    (tmp_path / ".env").write_text(f"JWT_SECRET={GOOD_KEY}\nJWT_ISSUER=spotter-dev\nJWT_AUDIENCE=spotter-dev\n")
    user = str(uuid.uuid4())
    code, output = start(["token", user, "--ttl", "600"], {}, cwd=tmp_path)
    assert code == 0, output
    claims = jwt.decode(output.strip(), GOOD_KEY, algorithms=["HS256"], audience="spotter-dev", issuer="spotter-dev")
    assert claims["sub"] == user and claims["exp"] - claims["iat"] == 600


def test_workers_token_will_not_mint_what_the_ingress_refuses(tmp_path):
    code, output = start(["token", str(uuid.uuid4()), "--ttl", "90000"], auth.ingress_env(GOOD_KEY), cwd=tmp_path)
    assert code != 0 and "JWT_MAX_TTL_S" in output


# ---- workers dev -------------------------------------------------------------------------------
def test_dev_writes_an_event_id_key_issuer_and_audience_into_dot_env(tmp_path, monkeypatch):
    from workers.ops.devstack import _ensure_dev_env

    for name in ("JWT_ALGORITHM", "JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_ISSUER", "JWT_AUDIENCE",
                 "JWT_ALLOW_MISSING_ISS_AUD", "EVENT_ID_KEY", "FEED_TOKEN_PRIVATE_KEY", "FEED_TOKEN_PUBLIC_KEY"):
        monkeypatch.setenv(name, "")  # recorded, so what _ensure_dev_env sets is undone afterwards
        monkeypatch.delenv(name)
    env_file = tmp_path / ".env"
    _ensure_dev_env(env_file)
    written = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
                   and not line.startswith("#"))
    assert len(written["EVENT_ID_KEY"].encode()) >= 32
    assert written["JWT_ISSUER"] == written["JWT_AUDIENCE"] == "spotter-dev"
    assert secrets.ingress_problems(os.environ) == []
    assert Config.from_env().event_id_key == written["EVENT_ID_KEY"].encode()
    # a second run keeps what is there
    _ensure_dev_env(env_file)
    assert env_file.read_text().count("EVENT_ID_KEY=") == 1


def test_dev_refuses_a_placeholder_up_front(tmp_path):
    code, output = start(["dev"], {**auth.ingress_env("change-me-development-only")}, cwd=tmp_path, timeout=60)
    assert code == 2, output
    assert "refusing to start: JWT_SECRET" in output and "change-me-development-only" not in output


# ---- the pure check ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", PLACEHOLDERS + ["  REPLACE_ME  ", '"REPLACE_ME"', "<your-secret>", "sk-...",
                                                  "x" * 40, "-----BEGIN PRIVATE KEY-----\\n…\\n-----END PRIVATE KEY-----"])
def test_known_placeholders_are_recognised(value):
    assert secrets.is_placeholder(value)


@pytest.mark.parametrize("value", [GOOD_KEY, "test", "DO00ACCESSKEYLOOKINGREAL", "sk-standin-0123456789abcdef",
                                   "spotter-auth", "https://auth.spotter.app/"])
def test_real_looking_values_are_not_placeholders(value):
    assert not secrets.is_placeholder(value)


@pytest.mark.parametrize("name", sorted(secrets.SECRETS))
@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_check_secrets_refuses_every_placeholder_for_every_secret(name, value):
    (problem,) = secrets.check_secrets([name], env={name: value})
    assert (problem.variable, problem.problem) == (name, "holds a placeholder, not a real value")


def test_check_secrets_only_checks_unset_variables_when_required():
    assert secrets.check_secrets(["S3_SECRET_KEY"], env={}) == []
    (problem,) = secrets.check_secrets(["S3_SECRET_KEY"], required=["S3_SECRET_KEY"], env={})
    assert (problem.variable, problem.problem) == ("S3_SECRET_KEY", "is not set")


@pytest.mark.parametrize("name", ["JWT_SECRET", "EVENT_ID_KEY"])
def test_hmac_keys_need_32_bytes(name):
    (short,) = secrets.check_secrets([name], env={name: "abcdefghijklmnopqrstuvwxyz01234"})  # 31 bytes
    assert "32 bytes" in short.problem
    assert secrets.check_secrets([name], env={name: "abcdefghijklmnopqrstuvwxyz012345"}) == []  # 32 bytes


def test_a_jwt_secret_is_not_an_hmac_key_under_an_asymmetric_algorithm():
    assert secrets.check_secrets(["JWT_SECRET"], env={"JWT_SECRET": "short", "JWT_ALGORITHM": "RS256"}) == []


def test_the_ingress_requires_its_keys_issuer_and_audience():
    assert secrets.ingress_problems(auth.ingress_env(GOOD_KEY)) == []
    assert {p.variable for p in secrets.ingress_problems({})} == {"JWT_SECRET", "EVENT_ID_KEY", "JWT_ISSUER",
                                                                  "JWT_AUDIENCE"}
    waived = {"JWT_SECRET": GOOD_KEY, "EVENT_ID_KEY": GOOD_KEY, "JWT_ALLOW_MISSING_ISS_AUD": "true"}
    assert secrets.ingress_problems(waived) == []
    assert [p.variable for p in secrets.ingress_problems({**waived, "JWT_ALLOW_MISSING_ISS_AUD": "false"})] == [
        "JWT_ISSUER", "JWT_AUDIENCE"]
    assert [p.variable for p in secrets.ingress_problems({**auth.ingress_env(GOOD_KEY), "JWT_MAX_TTL_S": "0"})] == [
        "JWT_MAX_TTL_S"]
    assert [p.variable for p in secrets.ingress_problems({**auth.ingress_env(GOOD_KEY), "JWT_ALGORITHM": "none"})] \
        == ["JWT_ALGORITHM", "JWT_PUBLIC_KEY"]


def test_each_worker_checks_the_keys_it_uses():
    assert [p.variable for p in secrets.process_problems("settings", {})] == ["FEED_TOKEN_PRIVATE_KEY"]
    assert [p.variable for p in secrets.process_problems("video", {})] == ["FEED_TOKEN_PUBLIC_KEY"]
    assert secrets.process_problems("transcode", {}) == []
    assert secrets.process_problems("dm", {"S3_SECRET_KEY": "REPLACE_ME"}) == []  # not its key
    assert [p.variable for p in secrets.process_problems("transcode", {"S3_SECRET_KEY": "REPLACE_ME"})] == [
        "S3_SECRET_KEY"]
    from workers import WORKERS
    assert set(secrets.PROCESSES) == set(WORKERS)


def test_secrets_stay_out_of_config_reprs():
    config = Config(jwt=JwtConfig(secret=GOOD_KEY), event_id_key=GOOD_KEY.encode())
    assert GOOD_KEY not in repr(config)


# ---- token lifetime (JWT_MAX_TTL_S) --------------------------------------------------------------
def _verifier(max_ttl_s: int = 3600) -> BearerVerifier:
    return BearerVerifier(JwtConfig(secret=GOOD_KEY, issuer=auth.ISSUER, audience=auth.AUDIENCE, max_ttl_s=max_ttl_s))


def test_a_token_living_longer_than_jwt_max_ttl_s_is_refused():
    now = int(time.time())
    verifier = _verifier(3600)
    sub = str(uuid.uuid4())
    assert verifier.subject("Bearer " + auth.encode(GOOD_KEY, sub, ttl_s=3600)) == sub
    for claims in ({"iat": now, "exp": now + 3600 + 60},                 # issued for too long
                   {"iat": now - 3000, "exp": now + 1000},               # issued long ago, still unexpired
                   {"exp": now + 3600 + 60}):                            # no iat: counted from now
        token = jwt.encode({"sub": sub, "iss": auth.ISSUER, "aud": auth.AUDIENCE, **claims}, GOOD_KEY, "HS256")
        with pytest.raises(BearerRefused, match="JWT_MAX_TTL_S"):
            verifier.subject("Bearer " + token)
    no_iat = jwt.encode({"sub": sub, "iss": auth.ISSUER, "aud": auth.AUDIENCE, "exp": now + 600}, GOOD_KEY, "HS256")
    assert verifier.subject("Bearer " + no_iat) == sub


def test_jwt_max_ttl_s_defaults_to_a_day():
    assert JwtConfig().max_ttl_s == secrets.DEFAULT_JWT_MAX_TTL_S == 86400
