"""The pure parts of `workers storage setup`: the rules it builds, how it compares them with what a
store echoes back, and the region of a Spaces endpoint."""
from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from shared.config import StorageConfig, spaces_region
from workers.ops import storage_setup as s
from workers.transcode.job import output_keys
from workers.video.worker import source_key

USER, VIDEO = str(uuid.uuid4()), str(uuid.uuid4())


# ---- region ----------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint, region", [
    ("https://fra1.digitaloceanspaces.com", "fra1"),
    ("https://nyc3.digitaloceanspaces.com/", "nyc3"),
    ("https://FRA1.DigitalOceanSpaces.com:443", "fra1"),
    ("https://spotter-media.sgp1.digitaloceanspaces.com", "sgp1"),  # the bucket's own host
    ("https://fra1.cdn.digitaloceanspaces.com", None),                # the CDN is no API endpoint
    ("https://digitaloceanspaces.com", None),
    ("https://fra1.digitaloceanspaces.com.evil.example", None),
    ("https://s3.eu-central-1.amazonaws.com", None),
    ("http://127.0.0.1:4566", None),
    ("", None),
    (None, None),
])
def test_spaces_region_comes_from_the_endpoint(endpoint, region):
    assert spaces_region(endpoint) == region


def test_s3_region_unset_or_empty_is_the_spaces_endpoints(monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", "https://fra1.digitaloceanspaces.com")
    monkeypatch.delenv("S3_REGION", raising=False)
    assert StorageConfig.from_env().region == "fra1"
    monkeypatch.setenv("S3_REGION", "")  # as an empty ConfigMap entry gives it
    assert StorageConfig.from_env().region == "fra1"
    monkeypatch.setenv("S3_REGION", "ams3")  # set: wins
    assert StorageConfig.from_env().region == "ams3"
    monkeypatch.delenv("S3_REGION")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert StorageConfig.from_env().region == "us-east-1"


# ---- lifecycle -------------------------------------------------------------------------------
def test_default_lifecycle_aborts_incomplete_multipart_uploads_bucket_wide_after_a_day():
    assert s.lifecycle_rules() == [{"ID": "spotter-abort-incomplete-multipart", "Filter": {"Prefix": ""},
                                    "Status": "Enabled", "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]


def test_no_default_rule_deletes_an_accepted_upload_or_a_rendition():
    """Uploads stay at their key once accepted (the transcode worker reads them there): a rule
    expiring their prefix would delete good videos' sources."""
    rendition, thumbnail = output_keys(USER, VIDEO)
    for key in (source_key(USER, VIDEO), rendition, thumbnail):
        assert s.expired_by(s.lifecycle_rules(), key) == [], key


def test_a_distinct_abandoned_upload_prefix_would_be_expired():
    rules = s.lifecycle_rules(2, expire={"incoming/": 3})
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    assert rules[1] == {"ID": "spotter-expire-incoming", "Filter": {"Prefix": "incoming/"}, "Status": "Enabled",
                        "Expiration": {"Days": 3}}
    assert s.expired_by(rules, "incoming/u/v") == ["spotter-expire-incoming"]
    assert s.expired_by(rules, source_key(USER, VIDEO)) == []


@pytest.mark.parametrize("abort_days, expire", [(0, {}), (1, {"": 3}), (1, {"incoming/": 0})])
def test_rules_that_would_delete_too_much_or_never_are_refused(abort_days, expire):
    with pytest.raises(ValueError):
        s.lifecycle_rules(abort_days, expire=expire)


def test_rules_not_ours_are_kept_and_ours_replaced():
    theirs = {"ID": "logs-30-days", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    old_ours = {**s.lifecycle_rules(7)[0]}
    assert s.merged_lifecycle([theirs, old_ours], s.lifecycle_rules()) == [theirs, *s.lifecycle_rules()]


def test_lifecycle_comparison_sees_through_the_stores_spelling():
    ours = s.lifecycle_rules()
    legacy = [{"ID": ours[0]["ID"], "Prefix": "", "Status": "Enabled",
               "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]
    assert s.same_lifecycle(ours, legacy)
    assert not s.same_lifecycle(ours, s.lifecycle_rules(2))
    assert not s.same_lifecycle(ours, [{**ours[0], "Status": "Disabled"}])
    assert not s.same_lifecycle(ours, [{**ours[0], "Filter": {"Prefix": "uploads/"}}])
    assert not s.same_lifecycle(ours, [])


# ---- CORS ------------------------------------------------------------------------------------
def test_cors_rule_allows_the_forms_post_presigned_get_and_put_and_exposes_etag():
    (rule,) = s.cors_rules(["https://b.example.com", "https://a.example.com"])
    assert rule["AllowedOrigins"] == ["https://a.example.com", "https://b.example.com"]
    assert set(rule["AllowedMethods"]) == {"GET", "HEAD", "POST", "PUT"}
    assert "Content-Type" in rule["AllowedHeaders"]
    assert rule["ExposeHeaders"] == ["ETag"] and rule["MaxAgeSeconds"] == 3600


def test_no_origin_no_cors_rule():
    assert s.cors_rules([]) == []
    assert s.cors_origins(("",)) == []  # CORS_ALLOWED_ORIGINS unset, as Config reads it


def test_origins_are_read_as_the_ingress_reads_them():
    assert s.cors_origins(["HTTPS://App.Example.com:443/", " http://localhost:* "]) == \
        ["https://app.example.com", "http://localhost:*"]
    with pytest.raises(ValueError, match="wildcard"):
        s.cors_origins(["https://*.example.com"])
    with pytest.raises(ValueError, match="not an origin"):
        s.cors_origins(["https://app.example.com/path"])


def test_cors_comparison_ignores_order_header_case_and_the_rules_id():
    ours = s.cors_rules(["https://a.example.com", "https://b.example.com"])
    echoed = [{"AllowedOrigins": ["https://b.example.com", "https://a.example.com"],
               "AllowedMethods": ["PUT", "POST", "HEAD", "GET"],
               "AllowedHeaders": [h.lower() for h in s.CORS_HEADERS], "ExposeHeaders": ["etag"], "MaxAgeSeconds": 3600}]
    assert s.same_cors(ours, echoed)
    assert not s.same_cors(ours, s.cors_rules(["https://a.example.com"]))
    assert not s.same_cors(ours, [{**echoed[0], "MaxAgeSeconds": 60}])
    assert not s.same_cors(ours, [])


def test_the_two_bucket_writes_carry_content_md5_as_spaces_expects():
    params = {"body": b"<LifecycleConfiguration/>", "headers": {}}
    s._add_content_md5(params)
    assert params["headers"]["Content-MD5"] == base64.b64encode(hashlib.md5(b"<LifecycleConfiguration/>").digest()).decode()
