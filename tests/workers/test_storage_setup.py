"""`workers storage setup` against the local S3 server (ministack, spoken to over HTTP as to Spaces):
lifecycle and CORS rules applied and read back, nothing changed by a second run, CORS following
CORS_ALLOWED_ORIGINS down to the answer a browser's preflight gets, and one clear line, without
credentials, when the store cannot be reached or refuses."""
from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import pytest

from shared.config import StorageConfig
from tests.support.net import free_port
from tests.support.processes import run_cli
from tests.support.uploads import post_form
from workers.runtime.storage import Storage

APP = "https://app.example.com"
OTHER = "https://other.example.com"
SECRET = "sekrit-" + uuid.uuid4().hex  # shows up in no output


@pytest.fixture
def bucket_env(local_s3):
    """The environment of `workers storage setup` for a bucket that does not exist yet."""
    return {**local_s3.env(f"setup-{uuid.uuid4().hex[:12]}"), "CORS_ALLOWED_ORIGINS": APP}


def storage_of(env: dict) -> Storage:
    return Storage(StorageConfig(env["S3_ENDPOINT_URL"], env["S3_BUCKET"], env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"]))


def setup(env: dict, *args: str, check: bool = True):
    return run_cli("storage", "setup", *args, env=env, check=check)


def lifecycle(env: dict) -> list[dict]:
    return storage_of(env).client.get_bucket_lifecycle_configuration(Bucket=env["S3_BUCKET"])["Rules"]


def cors(env: dict) -> list[dict]:
    return storage_of(env).client.get_bucket_cors(Bucket=env["S3_BUCKET"])["CORSRules"]


def preflight(env: dict, origin: str, method: str = "PUT") -> tuple[int, dict]:
    """A browser's preflight of a cross-origin `method` on an upload's key."""
    request = urllib.request.Request(f"{env['S3_ENDPOINT_URL']}/{env['S3_BUCKET']}/uploads/u/v/source",
                                     method="OPTIONS", headers={"Origin": origin, "Access-Control-Request-Method": method,
                                                                "Access-Control-Request-Headers": "content-type"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_creates_the_bucket_and_applies_both_rules_which_read_back_as_applied(bucket_env):
    done = setup(bucket_env, "--create")
    assert done.stdout.splitlines() == [
        f"bucket {bucket_env['S3_BUCKET']} at {bucket_env['S3_ENDPOINT_URL']} (region us-east-1): created",
        "lifecycle: applied (abort incomplete multipart uploads after 1 day(s))",
        f"cors: applied (origins {APP}; methods GET, HEAD, POST, PUT)"]

    (rule,) = lifecycle(bucket_env)
    assert rule["ID"] == "spotter-abort-incomplete-multipart" and rule["Status"] == "Enabled"
    assert rule["Filter"] == {"Prefix": ""} and rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Expiration" not in rule  # accepted uploads' sources share the uploads/ prefix: nothing is expired
    (cors_rule,) = cors(bucket_env)
    assert cors_rule["AllowedOrigins"] == [APP]
    assert sorted(cors_rule["AllowedMethods"]) == ["GET", "HEAD", "POST", "PUT"]
    assert cors_rule["ExposeHeaders"] == ["ETag"] and cors_rule["MaxAgeSeconds"] == 3600


def test_a_second_run_changes_nothing_and_says_so(bucket_env):
    setup(bucket_env, "--create")
    before = lifecycle(bucket_env), cors(bucket_env)
    again = setup(bucket_env)
    assert again.stdout.splitlines()[1:] == [
        "lifecycle: unchanged (abort incomplete multipart uploads after 1 day(s))",
        f"cors: unchanged (origins {APP}; methods GET, HEAD, POST, PUT)"]
    assert again.stdout.splitlines()[0].endswith(": exists")
    assert (lifecycle(bucket_env), cors(bucket_env)) == before


def test_a_different_abort_delay_is_applied_then_unchanged(bucket_env):
    setup(bucket_env, "--create")
    assert "lifecycle: applied (abort incomplete multipart uploads after 3 day(s))" in \
        setup(bucket_env, "--abort-multipart-days", "3").stdout
    assert lifecycle(bucket_env)[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert "lifecycle: unchanged" in setup(bucket_env, "--abort-multipart-days", "3").stdout


def test_lifecycle_rules_that_are_not_ours_are_kept(bucket_env):
    storage = storage_of(bucket_env)
    storage.ensure_bucket()
    theirs = {"ID": "logs-30-days", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    storage.client.put_bucket_lifecycle_configuration(Bucket=bucket_env["S3_BUCKET"],
                                                      LifecycleConfiguration={"Rules": [theirs]})

    assert "lifecycle: applied (abort incomplete multipart uploads after 1 day(s); 1 other rule(s) kept)" \
        in setup(bucket_env).stdout
    rules = {r["ID"]: r for r in lifecycle(bucket_env)}
    assert set(rules) == {"logs-30-days", "spotter-abort-incomplete-multipart"}
    assert rules["logs-30-days"]["Expiration"] == {"Days": 30} and rules["logs-30-days"]["Filter"] == {"Prefix": "logs/"}
    assert "lifecycle: unchanged" in setup(bucket_env).stdout


def test_cors_follows_cors_allowed_origins_down_to_the_browsers_preflight(bucket_env):
    setup(bucket_env, "--create")
    status, headers = preflight(bucket_env, APP)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == APP
    assert "PUT" in headers["Access-Control-Allow-Methods"] and headers["Access-Control-Expose-Headers"] == "ETag"
    assert headers["Access-Control-Max-Age"] == "3600"
    assert preflight(bucket_env, OTHER)[0] == 403
    assert preflight(bucket_env, APP, method="DELETE")[0] == 403  # no page deletes objects

    moved = {**bucket_env, "CORS_ALLOWED_ORIGINS": f"{OTHER}, http://localhost:*"}
    assert f"cors: applied (origins http://localhost:*, {OTHER}; methods GET, HEAD, POST, PUT)" in setup(moved).stdout
    assert sorted(cors(moved)[0]["AllowedOrigins"]) == sorted([OTHER, "http://localhost:*"])
    assert preflight(moved, APP)[0] == 403
    assert preflight(moved, OTHER)[0] == 200
    assert preflight(moved, "http://localhost:5173")[0] == 200  # the development wildcard: any local port

    # the form upload, then the page's read of it: the store's answer carries the allowed origin
    storage = storage_of(moved)
    key = f"uploads/{uuid.uuid4()}/{uuid.uuid4()}/source"
    assert post_form(storage.presigned_post(key, "video/mp4", max_bytes=1000), b"x" * 100)[0] in (200, 201, 204)
    for origin, allowed in ((OTHER, OTHER), (APP, None)):
        request = urllib.request.Request(storage.presigned_get(key), headers={"Origin": origin})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read() == b"x" * 100
            assert response.headers.get("Access-Control-Allow-Origin") == allowed
            if allowed:
                assert response.headers["Access-Control-Expose-Headers"] == "ETag"

    unset = {**bucket_env, "CORS_ALLOWED_ORIGINS": ""}  # e.g. a deploy that does not set it: nothing wiped
    assert "cors: skipped (CORS_ALLOWED_ORIGINS is empty" in setup(unset).stdout
    assert sorted(cors(unset)[0]["AllowedOrigins"]) == sorted([OTHER, "http://localhost:*"])
    assert preflight(unset, OTHER)[0] == 200


def test_a_malformed_origin_is_refused_before_the_store_is_touched(bucket_env):
    done = setup({**bucket_env, "CORS_ALLOWED_ORIGINS": "https://*.example.com"}, "--create", check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert "CORS_ALLOWED_ORIGINS" in done.stderr and "wildcard" in done.stderr
    assert "bucket" not in done.stderr  # nothing was created
    missing = setup(bucket_env, check=False)
    assert missing.returncode == 1 and "HeadBucket: 404" in missing.stderr


def test_a_missing_bucket_is_created_only_when_asked(bucket_env):
    done = setup(bucket_env, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (f"storage setup failed: bucket {bucket_env['S3_BUCKET']}: HeadBucket: 404: "
                                   "Not Found; create it, or pass --create (development)")


def test_an_unreachable_store_exits_1_with_one_line_and_no_credentials(bucket_env):
    env = {**bucket_env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "S3_SECRET_KEY": SECRET}
    done = setup(env, check=False)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("storage setup failed: cannot reach the store: EndpointConnectionError")
    assert env["S3_ENDPOINT_URL"] in line
    assert SECRET not in done.stderr


def test_a_refusal_by_the_store_exits_1_with_its_answer_and_no_credentials(bucket_env):
    setup(bucket_env, "--create")
    env = {**bucket_env, "S3_ACCESS_KEY": "AKIA" + uuid.uuid4().hex[:16].upper(), "S3_SECRET_KEY": SECRET}
    done = setup(env, check=False)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line == f"storage setup failed: bucket {env['S3_BUCKET']}: HeadBucket: 403: Forbidden"
    assert SECRET not in done.stderr and env["S3_ACCESS_KEY"] not in done.stderr
