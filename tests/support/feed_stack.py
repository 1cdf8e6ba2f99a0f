"""The ingress, the settings and the video worker on one vhost with their own databases and bucket:
the feed-access stories (tests/test_feed_access.py, tests/test_hostile_sweep.py) run against it."""
from __future__ import annotations

import subprocess
import uuid
from contextlib import contextmanager

from shared.tokens import mint
from tests.support import rabbit
from tests.support.auth import ingress_env, jwt_config
from tests.support.db import PG, drop_database, query
from tests.support.events import event
from tests.support.http import call, ready
from tests.support.net import free_port
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import wait_for
from tests.support.secrets import leaked

EVENTS = "/api/v1/notify/events"


class Stack:
    """The ingress, the settings and the video worker on one vhost, with their databases."""

    def __init__(self, env: dict, procs: dict, jwt_secret: str, feed_keys):
        self.env, self.procs, self.jwt_secret, self.feed_keys = env, procs, jwt_secret, feed_keys
        self.port = int(env["PORT"])
        self.settings_db, self.video_db = env["SETTINGS_DATABASE_URL"], env["VIDEO_DATABASE_URL"]

    def token(self, user: str) -> str:
        return mint(user, jwt_config(self.jwt_secret))

    def post(self, user: str, event_type: str, data: dict):
        return call(self.port, "POST", EVENTS, self.token(user), event(event_type, data=data, user_id=user))

    def feed(self, viewer: str, owner: str, feed_token: str | None = None, **params):
        query_string = "&".join(f"{k}={v}" for k, v in params.items())
        headers = {"X-Feed-Access-Token": feed_token} if feed_token else None
        return call(self.port, "GET", f"/api/v1/feeds/{owner}/posts?{query_string}", self.token(viewer),
                    headers=headers)

    def set_passcode(self, owner: str, code: str | None) -> dict:
        data = {"mode": "passcode", "passcode": code} if code else {"mode": "public"}
        status, body, _ = self.post(owner, "feed.visibility.updated", data)
        assert status == 200, body
        version = body["result"]["passcode_version"]
        # the video worker's copy follows through feed.visibility.changed
        wait_for(lambda: query(self.video_db, "SELECT passcode_version FROM feed_visibility WHERE owner_id = %s",
                               (owner,)) == [(version,)], message="video worker sees the new mode")
        return body["result"]

    def attempt(self, viewer: str, owner: str, code: str):
        return self.post(viewer, "feed.access.attempt", {"feed_owner_id": owner, "passcode": code})

    def access_token(self, viewer: str, owner: str, code: str) -> str:
        status, body, _ = self.attempt(viewer, owner, code)
        assert status == 200 and body["result"]["result"] == "granted", body
        return body["result"]["access_token"]

    def logs(self, name: str) -> list[dict]:
        return self.procs[name].logs()


@contextmanager
def running(jwt_secret: str, feed_keys, local_s3):
    """The Stack, up and ready; on leaving, stopped, checked for passcodes at rest, and removed."""
    vhost, url = rabbit.create_vhost()
    databases = {}
    for domain in ("settings", "video"):
        name = f"{domain}_test_{uuid.uuid4().hex[:10]}"
        databases[domain] = PG + name
    env = {"RABBITMQ_URL": url, **ingress_env(jwt_secret),
           "FEED_TOKEN_PRIVATE_KEY": feed_keys[0], "FEED_TOKEN_PUBLIC_KEY": feed_keys[1],
           "SETTINGS_DATABASE_URL": databases["settings"], "VIDEO_DATABASE_URL": databases["video"],
           "PORT": str(free_port()), "QUERY_TIMEOUT_S": "5", "PYTHONUNBUFFERED": "1",
           # the tests set many passcodes quickly; test_access_limits.py covers the default budget
           "FEED_VISIBILITY_HASHES_PER_S": "50",
           **local_s3.env(f"feed-{uuid.uuid4().hex[:12]}")}
    run_cli("migrate", "settings", "video", "--create", env=env)
    run_cli("topology", env=env)
    from workers.runtime.storage import Storage, StorageConfig
    storage = Storage(StorageConfig(env["S3_ENDPOINT_URL"], env["S3_BUCKET"], env["S3_ACCESS_KEY"],
                                    env["S3_SECRET_KEY"]))
    storage.ensure_bucket()
    procs = {"settings": workers_cli("run", "settings", env=env), "video": workers_cli("run", "video", env=env),
             "ingress": workers_cli("serve", env=env)}
    stack = Stack(env, procs, jwt_secret, feed_keys)
    stack.storage = storage
    try:
        wait_for(lambda: ready(stack.port), message="ingress ready")
        for name in ("settings", "video"):
            wait_for(lambda: any(l.get("msg") == "answering queries" for l in stack.logs(name)),
                     message=f"{name} answering queries")
        yield stack
    finally:
        for proc in procs.values():
            proc.terminate()
        # what the whole module left behind: no passcode in any queue, dead letters included
        client = rabbit.Rabbit(url)
        try:
            for queue in _queues(vhost):
                for _, body in client.drain(queue):
                    assert not leaked(body.decode(errors="replace")), f"a passcode rests in {queue}"
        finally:
            client.close()
            rabbit.delete_vhost(vhost)
            for db in databases.values():
                drop_database(db.rsplit("/", 1)[1])


def _queues(vhost: str) -> list[str]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "--no-table-headers"],
                         capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]
