"""`workers dev`: one command brings the whole system up locally, and Ctrl-C stops it."""
from __future__ import annotations

import json
import signal
import socket
import urllib.request
import uuid

from tests.conftest import query
from workers import WORKERS
from tests.support.events import event
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import wait_for
from tests.test_end_to_end import _ready, free_port, post


def test_dev_brings_everything_up_and_a_posted_event_lands(base_env, make_database):
    settings_db, video_db = make_database("settings", migrated=False), make_database("video", migrated=False)
    env = {**base_env, "SETTINGS_DATABASE_URL": settings_db, "VIDEO_DATABASE_URL": video_db,
           "PORT": str(free_port()), "LOCAL_S3_PORT": str(free_port()), "SPOTTER_ENV_FILE": "/nonexistent",
           "HEALTH_PORT": str(free_port(span=7))}
    dev = workers_cli("dev", env=env)
    try:
        port = int(env["PORT"])
        wait_for(lambda: _ready(port), timeout=60, message=f"ingress up: {dev.text()[-2000:]}")
        user = str(uuid.uuid4())
        token = run_cli("token", user, env=env).stdout.strip()
        status, _ = post(port, event(user_id=user), token)
        assert status == 202
        wait_for(lambda: query(settings_db, "SELECT count(*) FROM user_settings")[0][0] == 1, timeout=30)
        with socket.create_connection(("127.0.0.1", int(env["LOCAL_S3_PORT"])), timeout=2):
            pass  # the local S3 server is up too
        # each worker answers its probes on its own port: HEALTH_PORT + its place in sorted order
        settings_port = int(env["HEALTH_PORT"]) + sorted(WORKERS).index("settings")
        wait_for(lambda: _status(f"http://127.0.0.1:{settings_port}/readyz") == 200, timeout=30,
                 message="settings worker ready")
        assert _status(f"http://127.0.0.1:{int(env['HEALTH_PORT']) + sorted(WORKERS).index('video')}/livez") == 200
    finally:
        dev.proc.send_signal(signal.SIGINT)
        dev.proc.wait(60)
    assert dev.proc.returncode is not None


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            json.loads(resp.read())
            return resp.status
    except OSError:
        return None
