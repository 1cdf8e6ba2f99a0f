"""S3-compatible object storage (DigitalOcean Spaces in production) through boto3."""
from __future__ import annotations

import functools
import time


import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig

from shared.config import StorageConfig

class StorageUnavailable(Exception):
    """The store did not answer (network, 5xx): worth retrying."""


class Storage:
    def __init__(self, cfg: StorageConfig, connect_timeout: float = 5, read_timeout: float = 60, attempts: int = 3):
        self.cfg = cfg
        self.client = boto3.client(
            "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region,
            aws_access_key_id=cfg.access_key, aws_secret_access_key=cfg.secret_key,
            config=BotoConfig(
                signature_version="s3v4",
                s3={"addressing_style": "path" if cfg.endpoint_url else "auto"},
                # Spaces and most S3-compatible stores reject the newer default checksums
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                connect_timeout=connect_timeout, read_timeout=read_timeout,
                retries={"max_attempts": attempts, "mode": "standard"}))

    def ensure_bucket(self) -> None:
        """Create the (private) bucket if missing: development and tests."""
        try:
            self.client.head_bucket(Bucket=self.cfg.bucket)
        except botocore.exceptions.ClientError:
            self.client.create_bucket(Bucket=self.cfg.bucket)

    def presigned_post(self, key: str, content_type: str, max_bytes: int | None = None) -> dict:
        """A browser form upload bound to this key, content type and size range, expiring soon."""
        max_bytes = max_bytes or self.cfg.max_upload_bytes
        form = self.client.generate_presigned_post(
            Bucket=self.cfg.bucket, Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=self.cfg.upload_expiry_s)
        return {"url": form["url"], "fields": form["fields"], "method": "POST",
                "expires_at": int(time.time()) + self.cfg.upload_expiry_s, "max_bytes": max_bytes}

    def presigned_get(self, key: str) -> str:
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.cfg.bucket, "Key": key},
                                                  ExpiresIn=self.cfg.download_expiry_s)

    def head(self, key: str) -> dict | None:
        """{'size', 'content_type'} of the stored object, or None when there is none."""
        try:
            meta = self.client.head_object(Bucket=self.cfg.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._classify(exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise StorageUnavailable(str(exc)) from exc
        return {"size": meta["ContentLength"], "content_type": meta.get("ContentType")}

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, Bucket=self.cfg.bucket, Key=key)

    def download(self, key: str, path: str) -> None:
        self._call(self.client.download_file, self.cfg.bucket, key, path)

    def upload(self, path: str, key: str, content_type: str) -> None:
        self._call(self.client.upload_file, path, self.cfg.bucket, key,
                   ExtraArgs={"ContentType": content_type})

    def list(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            kwargs = {"Bucket": self.cfg.bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self._call(self.client.list_objects_v2, **kwargs)
            keys += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return keys

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except botocore.exceptions.ClientError as exc:
            raise self._classify(exc) from exc
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.S3TransferFailedError) as exc:
            raise StorageUnavailable(str(exc)) from exc

    @staticmethod
    def _classify(exc: botocore.exceptions.ClientError) -> Exception:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return StorageUnavailable(str(exc)) if status >= 500 or status in (408, 429) else exc


@functools.cache
def process_storage() -> Storage:
    """This process's store, from the environment: a boto3 client is costly to build and keeps
    its connection pool, so every handler shares one."""
    return Storage(StorageConfig.from_env())
