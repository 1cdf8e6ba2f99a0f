"""Logs an operator can search (issue 18): every line every process kind writes is one JSON
object with the fields DESIGN §7 names (level, ts, service, msg), library lines included.

Each process kind starts with every dependency unreachable (broker, databases and storage on a
port nothing listens on), with valid secrets otherwise, runs a few seconds (retrying and logging
as it goes), then gets SIGTERM. Every non-empty line it wrote, on stdout and on stderr, must
parse. The long-running kinds (the ingress, each worker, the migration Job) write nothing on
stderr; operator commands whose stdout is their answer (bin/pod-health-check's report) write
their log lines as JSON on stderr.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.support import auth
from tests.support.net import free_port
from workers import WORKERS

REPO = Path(__file__).resolve().parents[1]
LEVELS = {"debug", "info", "warning", "error", "critical"}
DOMAINS = ("SETTINGS", "VIDEO", "PROGRAM", "DM", "MACHINE", "AI", "NOTIFY", "REMINDER")


@pytest.fixture
def unreachable_env(jwt_secret, feed_keys) -> dict:
    """A valid production-like environment whose broker, databases and storage do not answer."""
    closed = free_port()  # bound and released: nothing listens there
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JWT_", "FEED_TOKEN_", "S3_", "OPENWEBUI_", "RABBITMQ_", "GUNICORN_"))
           and not k.endswith("DATABASE_URL") and k not in ("EVENT_ID_KEY", "SPOTTER_ENV_FILE", "PYTHONWARNINGS")}
    env.update(auth.ingress_env(jwt_secret))
    env.update({
        "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{closed}/",
        "RABBITMQ_MANAGEMENT_URL": f"http://127.0.0.1:{closed}/",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/unreachable",
        **{f"{d}_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/{d.lower()}_db" for d in DOMAINS},
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}", "S3_BUCKET": "media",
        "S3_ACCESS_KEY": "AKx7Gq2Lr9TzWm4NcV3b", "S3_SECRET_KEY": "Qm8vR2xT9kLp4Wn7Zc3Yh6Jb1Fd5Gs0AuE8iO2pK",
        "OPENWEBUI_URL": f"http://127.0.0.1:{closed}", "OPENWEBUI_MODEL": "llama3",
        "OPENWEBUI_API_KEY": "ow-7Tq2Lr9TzWm4NcV3bQm8vR2xT9kLp4Wn",
        "FEED_TOKEN_PRIVATE_KEY": feed_keys[0], "FEED_TOKEN_PUBLIC_KEY": feed_keys[1],
        "LOG_LEVEL": "INFO", "HEALTH_PORT": "0", "PYTHONUNBUFFERED": "1",
        "SPOTTER_ENV_FILE": "/nonexistent/.env",  # never a developer's .env
    })
    return env


class Run:
    """A process whose stdout and stderr are kept apart, in files (no pipe to fill up)."""

    def __init__(self, args: list[str], env: dict):
        self.args = args
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=self.out, stderr=self.err)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.args} ignored SIGTERM for {timeout} s")

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def _read(self, f) -> list[str]:
        f.seek(0)
        return [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]

    def stdout(self) -> list[str]:
        return self._read(self.out)

    def stderr(self) -> list[str]:
        return self._read(self.err)


def parsed(lines: list[str], where: str) -> list[dict]:
    """Each line as a JSON object with the DESIGN §7 fields; the first line that is not, named."""
    objects = []
    for raw in lines:
        try:
            line = json.loads(raw)
        except ValueError:
            raise AssertionError(f"{where}: not JSON: {raw[:300]!r}") from None
        assert isinstance(line, dict), f"{where}: not a JSON object: {raw[:300]!r}"
        assert line.get("level") in LEVELS, f"{where}: level missing or unknown: {raw[:300]!r}"
        assert isinstance(line.get("ts"), (int, float)), f"{where}: no numeric ts: {raw[:300]!r}"
        assert isinstance(line.get("msg"), str) and line["msg"], f"{where}: no msg: {raw[:300]!r}"
        assert isinstance(line.get("service"), str), f"{where}: no service: {raw[:300]!r}"
        objects.append(line)
    return objects


def from_logger(lines: list[dict], prefix: str) -> list[dict]:
    return [line for line in lines if str(line.get("logger", "")).startswith(prefix)]


def workers(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers", *args]


def test_every_worker_logs_only_json_on_stdout_while_its_dependencies_are_down(unreachable_env):
    runs = {name: Run(workers("run", name), unreachable_env) for name in sorted(WORKERS)}
    time.sleep(5)  # each retries the broker with backoff, and logs it
    codes = {name: run.stop() for name, run in runs.items()}

    for name, run in runs.items():
        assert run.stderr() == [], f"{name} wrote on stderr: {run.stderr()[:3]}"
        lines = parsed(run.stdout(), f"workers run {name}")
        assert {line["service"] for line in lines} == {name}
        assert any(line["msg"] == "worker starting" for line in lines), name
        assert any(line["msg"] == "broker unavailable, reconnecting" for line in lines), name
        # pika's own record of the refused connection, as one of our lines (not dropped, not text)
        pika = from_logger(lines, "pika")
        assert pika and all(line["level"] in ("warning", "error") for line in pika), name
        assert codes[name] == 0, f"{name} exited {codes[name]} on SIGTERM"


def test_ingress_under_gunicorn_logs_only_json_on_stdout_gunicorn_included(unreachable_env):
    env = {**unreachable_env, "PORT": str(free_port()), "GUNICORN_LOG_LEVEL": "info"}
    ingress = Run(workers("serve"), env)  # as k8s/base/ingress.yaml starts it
    time.sleep(5)
    ingress.stop()

    assert ingress.stderr() == [], f"the ingress wrote on stderr: {ingress.stderr()[:3]}"
    lines = parsed(ingress.stdout(), "workers serve")
    arbiter = [line["msg"] for line in from_logger(lines, "gunicorn")]
    assert any(m.startswith("Starting gunicorn") for m in arbiter), arbiter
    assert any("Shutting down" in m for m in arbiter), arbiter
    assert any(line["msg"] == "broker unreachable" for line in lines)


def test_migration_job_fails_in_json_lines_and_exits_non_zero(unreachable_env):
    job = Run(workers("migrate", "--all"), unreachable_env)  # as k8s/base/migrate-job.yaml runs it
    assert job.wait() != 0

    assert job.stderr() == [], f"migrate wrote on stderr: {job.stderr()[:3]}"
    failed = [line for line in parsed(job.stdout(), "workers migrate") if line["msg"] == "migration failed"]
    assert failed and failed[0]["level"] == "error" and "Connection refused" in failed[0]["error"]


def test_a_worker_crashing_at_start_is_one_json_line_with_its_traceback(unreachable_env):
    crash = Run(workers("run", "dm"), {**unreachable_env, "RETRY_DELAYS_S": "soon"})  # not integers
    assert crash.wait() == 1

    assert crash.stderr() == [], f"the crash went to stderr: {crash.stderr()[:3]}"
    lines = parsed(crash.stdout(), "crashing worker")
    assert len(lines) == 1 and lines[0]["level"] == "critical", lines
    assert lines[0]["exception"].startswith("ValueError") and "shared/config.py" in lines[0]["traceback"]


def test_pod_health_check_reports_on_stdout_and_logs_json_on_stderr(unreachable_env, tmp_path):
    check = Run([str(REPO / "bin" / "pod-health-check"), "--no-pods", "--log", str(tmp_path / "infra-health.log")],
                unreachable_env)
    assert check.wait() == 1  # unhealthy

    assert any(line.startswith("FAIL  broker") for line in check.stdout())  # the report: human text by design
    assert from_logger(parsed(check.stderr(), "pod-health-check stderr"), "pika")


def test_warnings_library_records_and_thread_crashes_of_any_process_are_json(unreachable_env):
    """The hooks setup_logging installs, in a fresh interpreter: what a library might do at any
    time (warn, log through stdlib logging with a broken format, crash a thread)."""
    program = textwrap.dedent("""
        import logging, threading, warnings
        from shared.logging import setup_logging
        setup_logging("probe")
        warnings.warn("this API goes away", DeprecationWarning)
        logging.getLogger("botocore.retryhandler").warning("retry needed, retrying request after %s s", 0.5)
        logging.getLogger("yoyo.migrations").warning("a %s format %s", "broken")
        logging.getLogger("noisy.library").info("below WARNING: dropped")
        thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
        thread.start(); thread.join()
        raise SystemExit(3)
    """)
    probe = Run([sys.executable, "-c", program], {**unreachable_env, "PYTHONWARNINGS": "always"})
    assert probe.wait() == 3

    assert probe.stderr() == [], probe.stderr()[:3]
    lines = parsed(probe.stdout(), "probe")
    by_logger = {line.get("logger"): line for line in lines}
    assert by_logger["py.warnings"]["msg"] == "this API goes away"
    assert by_logger["py.warnings"]["category"] == "DeprecationWarning"
    assert by_logger["botocore.retryhandler"]["msg"] == "retry needed, retrying request after 0.5 s"
    assert by_logger["yoyo.migrations"]["level"] == "warning"
    assert "noisy.library" not in by_logger
    assert by_logger["excepthook"]["thread"] == "doomed"
    assert by_logger["excepthook"]["exception"] == "ZeroDivisionError: division by zero"
