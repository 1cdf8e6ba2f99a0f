"""`workers storage setup`: the bucket's lifecycle and CORS rules, applied through the S3 API.

Run once per bucket and again after changing CORS_ALLOWED_ORIGINS (docs/operations.md). It reads
the current configuration first and writes only what differs, so a second run changes nothing
and says `unchanged`.

Lifecycle: one rule, bucket-wide: abort multipart uploads still incomplete N days (default 1)
after they began. Their parts are billed but invisible to a listing, so only the store can remove
them. No prefix is expired: an upload goes to `uploads/<user>/<video>/source`
(workers/video/worker.py source_key) and stays at that key once accepted, because the transcode
worker reads it from there; so every prefix that holds abandoned uploads also holds the sources
of good videos, and an expiry rule would delete those too. Abandoned uploads are removed by
`workers prune`, which knows from the database which uploads never completed. Rules of the
bucket whose ID does not start with `spotter-` are kept as they are.

CORS: one rule for web uploads and downloads, origins from CORS_ALLOWED_ORIGINS (read and checked
as the ingress does, ingress/cors.py); the bucket's CORS configuration becomes this rule alone
(rules set by hand are replaced). With the variable empty, CORS is left as it is: the command runs
as a Job on every deploy, where an unset variable must not break uploads configured by hand.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

import botocore.exceptions

from shared.config import StorageConfig, spaces_region
from workers.runtime.storage import Storage

RULE_ID_PREFIX = "spotter-"
ABORT_RULE_ID = "spotter-abort-incomplete-multipart"
CORS_RULE_ID = "spotter-web-uploads"
ABORT_MULTIPART_DAYS = 1
# Prefixes that hold nothing but uploads not yet accepted, safe to expire wholesale. None today:
# see the module docstring. A test (tests/unit/test_storage_setup.py) fails if a default rule
# would expire an upload's or a rendition's key.
ABANDONED_UPLOAD_PREFIXES: dict[str, int] = {}

# The presigned POST form (uploads), presigned GET (playback, downloads) and HEAD, and presigned
# PUT for the parts of a multipart upload.
CORS_METHODS = ("GET", "HEAD", "POST", "PUT")
# What a browser may send beyond the safelisted headers: the form's or a part's type, a part's
# checksum, a ranged read while seeking, and S3's own x-amz-* headers. Signed URLs carry the
# authorisation in their query, so nothing else is needed.
CORS_HEADERS = ("Content-Type", "Content-MD5", "Range", "x-amz-*")
# A multipart upload is completed with each part's ETag, which the page reads off the PUT's response.
CORS_EXPOSE = ("ETag",)
CORS_MAX_AGE_S = 3600  # Chromium caps a preflight's cache at 7200 s


class SetupFailed(Exception):
    """The store could not be reached, or refused: one line for the operator, no credentials."""


# ---- the rules (pure) ----------------------------------------------------------------------
def lifecycle_rules(abort_days: int = ABORT_MULTIPART_DAYS,
                    expire: dict[str, int] | None = None) -> list[dict]:
    """Our lifecycle rules: abort incomplete multipart uploads bucket-wide after abort_days, and
    expire each prefix of `expire` (prefix -> days) that holds only abandoned uploads."""
    if abort_days < 1:
        raise ValueError("abort_days must be at least 1")
    rules = [{"ID": ABORT_RULE_ID, "Filter": {"Prefix": ""}, "Status": "Enabled",
              "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_days}}]
    for prefix, days in sorted((ABANDONED_UPLOAD_PREFIXES if expire is None else expire).items()):
        if not prefix or days < 1:
            raise ValueError(f"expiring {prefix!r} after {days} day(s): needs a prefix and at least 1 day")
        rules.append({"ID": f"{RULE_ID_PREFIX}expire-{prefix.strip('/').replace('/', '-')}",
                      "Filter": {"Prefix": prefix}, "Status": "Enabled", "Expiration": {"Days": days}})
    return rules


def expired_by(rules: Iterable[dict], key: str) -> list[str]:
    """IDs of the enabled rules that would delete the object `key` (not just incomplete uploads)."""
    return [r.get("ID", "") for r in rules if r.get("Status") == "Enabled" and "Expiration" in r
            and key.startswith(_prefix(r))]


def cors_origins(configured: Iterable[str]) -> list[str]:
    """CORS_ALLOWED_ORIGINS as S3 AllowedOrigins; ValueError on an entry the ingress would refuse.
    The development form `http://localhost:*` stays a wildcard (S3 allows one `*` per origin)."""
    from ingress.cors import Cors  # the same parsing and checks as the ingress's

    allowed = Cors(configured)
    return sorted(allowed.exact) + sorted(f"{scheme}://{host}:*" for scheme, host in allowed.any_port)


def cors_rules(origins: Iterable[str]) -> list[dict]:
    """The bucket's CORS rules for these AllowedOrigins: one rule, or none without an origin."""
    origins = sorted(set(origins))
    if not origins:
        return []
    return [{"ID": CORS_RULE_ID, "AllowedOrigins": origins, "AllowedMethods": list(CORS_METHODS),
             "AllowedHeaders": list(CORS_HEADERS), "ExposeHeaders": list(CORS_EXPOSE),
             "MaxAgeSeconds": CORS_MAX_AGE_S}]


def merged_lifecycle(current: list[dict], ours: list[dict]) -> list[dict]:
    """The bucket's rules that are not ours, as they are, then ours."""
    return [r for r in current if not str(r.get("ID", "")).startswith(RULE_ID_PREFIX)] + ours


def same_lifecycle(a: list[dict], b: list[dict]) -> bool:
    return sorted(map(_lifecycle_key, a)) == sorted(map(_lifecycle_key, b))


def same_cors(a: list[dict], b: list[dict]) -> bool:
    return sorted(map(_cors_key, a)) == sorted(map(_cors_key, b))


def _prefix(rule: dict) -> str:
    """A rule's prefix whichever way the store writes it (Filter.Prefix, Filter.And.Prefix, or the
    legacy top-level Prefix)."""
    filt = rule.get("Filter") or {}
    return filt.get("Prefix", (filt.get("And") or {}).get("Prefix", rule.get("Prefix", "")))


def _lifecycle_key(rule: dict) -> tuple:
    """What a rule does, for comparison: stores echo the same rule in slightly different shapes."""
    filt = rule.get("Filter") or {}
    tags = tuple(sorted((t["Key"], t["Value"]) for t in
                        ([filt["Tag"]] if "Tag" in filt else (filt.get("And") or {}).get("Tags", []))))
    expiration = rule.get("Expiration") or {}
    return (str(rule.get("ID", "")), rule.get("Status", ""), _prefix(rule), tags,
            (rule.get("AbortIncompleteMultipartUpload") or {}).get("DaysAfterInitiation"),
            expiration.get("Days"), str(expiration.get("Date", "")), expiration.get("ExpiredObjectDeleteMarker"),
            repr(rule.get("Transitions")), repr(rule.get("NoncurrentVersionExpiration")),
            repr(rule.get("NoncurrentVersionTransitions")))


def _cors_key(rule: dict) -> tuple:
    """Lists as sets; header names case-insensitive (HTTP's); the rule's ID ignored (not every store keeps it)."""
    return (tuple(sorted(rule.get("AllowedOrigins", []))), tuple(sorted(rule.get("AllowedMethods", []))),
            tuple(sorted(h.lower() for h in rule.get("AllowedHeaders", []))),
            tuple(sorted(h.lower() for h in rule.get("ExposeHeaders", []))), rule.get("MaxAgeSeconds"))


# ---- the store -----------------------------------------------------------------------------
def setup(cfg: StorageConfig, origins: list[str], abort_days: int = ABORT_MULTIPART_DAYS,
          create: bool = False, region_set: bool = True) -> list[str]:
    """Make the bucket's lifecycle and CORS rules ours; returns what it did, one line per part;
    SetupFailed when the store cannot be reached or refuses. region_set: whether S3_REGION was
    given (else derived or defaulted)."""
    storage = Storage(cfg, connect_timeout=5, read_timeout=30, attempts=2)
    client = storage.client
    # Spaces, like S3 before botocore 1.36, expects Content-MD5 on these two calls; botocore now
    # sends a CRC32 instead. Both are sent: S3 and the local server check either.
    for operation in ("PutBucketLifecycleConfiguration", "PutBucketCors"):
        client.meta.events.register(f"before-call.s3.{operation}", _add_content_md5)
    report: list[str] = []
    derived = spaces_region(cfg.endpoint_url)
    if region_set and derived and derived != cfg.region:
        report.append(f"warning: S3_REGION is {cfg.region} but {cfg.endpoint_url} is in {derived}: "
                      f"signatures may be refused; set S3_REGION={derived} or leave it unset")
    where = f"bucket {cfg.bucket} at {cfg.endpoint_url or 'AWS S3'} (region {cfg.region})"
    report.append(f"{where}: {_ensure_bucket(storage, create)}")

    ours = lifecycle_rules(abort_days)
    current = _read(client.get_bucket_lifecycle_configuration, "Rules", "NoSuchLifecycleConfiguration", cfg.bucket)
    wanted = merged_lifecycle(current, ours)
    what = f"abort incomplete multipart uploads after {abort_days} day(s)"
    kept = len(wanted) - len(ours)
    what += f"; {kept} other rule(s) kept" if kept else ""
    if same_lifecycle(current, wanted):
        report.append(f"lifecycle: unchanged ({what})")
    else:
        _call(client.put_bucket_lifecycle_configuration, Bucket=cfg.bucket,
              LifecycleConfiguration={"Rules": wanted})
        report.append(f"lifecycle: applied ({what})")

    wanted = cors_rules(origins)
    if not wanted:  # the Job runs on every deploy: an unset variable must not wipe rules set by hand
        report.append("cors: skipped (CORS_ALLOWED_ORIGINS is empty: the bucket's CORS rules are left as they "
                      "are; without any, no browser page may upload to or read from the bucket)")
        return report
    current = _read(client.get_bucket_cors, "CORSRules", "NoSuchCORSConfiguration", cfg.bucket)
    what = f"origins {', '.join(wanted[0]['AllowedOrigins'])}; methods {', '.join(CORS_METHODS)}"
    if same_cors(current, wanted):
        report.append(f"cors: unchanged ({what})")
    else:
        _call(client.put_bucket_cors, Bucket=cfg.bucket, CORSConfiguration={"CORSRules": wanted})
        report.append(f"cors: applied ({what})")
    return report


def _ensure_bucket(storage: Storage, create: bool) -> str:
    client, cfg = storage.client, storage.cfg
    try:
        client.head_bucket(Bucket=cfg.bucket)
        return "exists"
    except botocore.exceptions.ClientError as exc:
        missing = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
        if not (missing and create):
            hint = "; create it, or pass --create (development)" if missing else ""
            raise SetupFailed(f"bucket {cfg.bucket}: {_failed(exc)}{hint}") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise _failed(exc) from exc
    # AWS outside us-east-1 wants the region named; Spaces and local servers take it from the endpoint
    where = ({"CreateBucketConfiguration": {"LocationConstraint": cfg.region}}
             if not cfg.endpoint_url and cfg.region != "us-east-1" else {})
    _call(client.create_bucket, Bucket=cfg.bucket, **where)
    return "created"


def _read(fn, field: str, absent: str, bucket: str) -> list[dict]:
    """The configuration's rules, [] when the bucket has none."""
    try:
        return fn(Bucket=bucket).get(field, [])
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == absent:
            return []
        raise _failed(exc) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise _failed(exc) from exc


def _call(fn, **kwargs):
    try:
        return fn(**kwargs)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise _failed(exc) from exc


def _failed(exc: Exception) -> SetupFailed:
    """One line: the operation and the store's code and message, or why it could not be reached.
    botocore's messages name the endpoint and the operation, never the keys."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        code = error.get("Code", "")
        code = "" if code == str(status) else f" {code}"
        return SetupFailed(f"{exc.operation_name}: {status}{code}: {error.get('Message') or 'refused'}")
    return SetupFailed(f"cannot reach the store: {type(exc).__name__}: {exc}")


def _add_content_md5(params, **_kwargs) -> None:
    body = params.get("body")
    if isinstance(body, bytes):
        params["headers"]["Content-MD5"] = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
