"""`workers dev`: one command brings the whole system up locally, and Ctrl-C stops it."""
from __future__ import annotations

import json
import signal
import socket
import urllib.request
import uuid

from tests.support.db import query
from workers import WORKERS
from tests.support.events import event
from tests.support.processes import descendants, run_cli, still_running, workers_cli
from tests.support.rabbit import wait_for
from tests.support.http import post_events, ready
from tests.support.net import free_port


def test_dev_brings_everything_up_and_a_posted_event_lands(base_env, make_database):
    settings_db, video_db = make_database("settings", migrated=False), make_database("video", migrated=False)
    env = {**base_env, "SETTINGS_DATABASE_URL": settings_db, "VIDEO_DATABASE_URL": video_db,
           "PORT": str(free_port()), "LOCAL_S3_PORT": str(free_port()), "SPOTTER_ENV_FILE": "/nonexistent",
           "HEALTH_PORT": str(free_port(span=7))}
    dev = workers_cli("dev", env=env)
    try:
        port = int(env["PORT"])
        wait_for(lambda: ready(port), timeout=60, message=f"ingress up: {dev.text()[-2000:]}")
        user = str(uuid.uuid4())
        token = run_cli("token", user, env=env).stdout.strip()
        status, _ = post_events(port, event(user_id=user), token)
        assert status == 202
        wait_for(lambda: query(settings_db, "SELECT count(*) FROM user_settings")[0][0] == 1, timeout=30)
        with socket.create_connection(("127.0.0.1", int(env["LOCAL_S3_PORT"])), timeout=2):
            pass  # the local S3 server is up too
        # each worker answers its probes on its own port: HEALTH_PORT + its place in sorted order
        settings_port = int(env["HEALTH_PORT"]) + sorted(WORKERS).index("settings")
        wait_for(lambda: _status(f"http://127.0.0.1:{settings_port}/readyz") == 200, timeout=30,
                 message="settings worker ready")
        assert _status(f"http://127.0.0.1:{int(env['HEALTH_PORT']) + sorted(WORKERS).index('video')}/livez") == 200
        children = descendants(dev.proc.pid)  # the ingress (gunicorn and its workers), each worker, S3
        assert len(children) > len(WORKERS) + 1, children
    finally:
        dev.proc.send_signal(signal.SIGINT)  # Ctrl-C
        dev.proc.wait(60)
    # Ctrl-C is the normal way out: a clean exit, nothing left running, the ports free again
    assert dev.proc.returncode == 0, dev.text()[-2000:]
    assert "stopping everything" not in dev.text(), "a process died before Ctrl-C"
    assert still_running(children) == set()
    assert not _listening(port) and not _listening(int(env["LOCAL_S3_PORT"]))
    assert not _listening(settings_port)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            json.loads(resp.read())
            return resp.status
    except OSError:
        return None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
