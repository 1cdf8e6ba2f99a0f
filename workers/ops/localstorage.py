"""A local S3-compatible server (ministack) for `workers dev` and the tests, reached over HTTP.

ministack (with AUTH=true) verifies SigV4 (expired or tampered presigned URLs and forms are
refused), a presigned POST's policy (key, content type, content-length-range, expiry), and
refuses anonymous reads of private objects. It pins an older botocore, so it lives in its own virtualenv
(`.local/ministack-venv`, made by bin/bootstrap), never in the project's.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("MINISTACK_VENV", REPO / ".local" / "ministack-venv"))
ACCESS_KEY, SECRET_KEY = "test", "test"  # ministack's local credentials, not a secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalS3:
    def __init__(self, port: int | None = None, log_path: str | None = None):
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path or os.devnull, "ab")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "LocalS3":
        binary = VENV / "bin" / "ministack"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run bin/bootstrap")
        # AUTH=true: upload-form signatures are verified and private objects refuse anonymous
        # reads, as on Spaces; with the default, tampered forms and anonymous GETs succeed.
        env = {**os.environ, "GATEWAY_PORT": str(self.port), "BIND_HOST": "127.0.0.1",
               "MINISTACK_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING", "AUTH": "true", "SERVICES": "s3"}
        self.proc = subprocess.Popen([str(binary)], env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ministack exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/_ministack/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("ministack did not become healthy")

    def env(self, bucket: str) -> dict:
        return {"S3_ENDPOINT_URL": self.url, "S3_BUCKET": bucket, "S3_ACCESS_KEY": ACCESS_KEY,
                "S3_SECRET_KEY": SECRET_KEY, "S3_REGION": "us-east-1"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
