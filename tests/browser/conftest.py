"""One headless Chromium for the session, and pages served from a real origin."""
from __future__ import annotations

import pytest

from tests.support.db import query
from tests.support import auth, rabbit
from tests.support.browser import Browser, PageServer
from tests.support.http import call
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import wait_for
from tests.support.tcpproxy import TcpProxy
from tests.support.http import ready
from tests.support.net import free_port

EVENTS = "/api/v1/notify/events"
BLANK = "<!doctype html><meta charset=utf-8><title>spotter client test</title>"


@pytest.fixture(scope="session")
def browser():
    """Starting Chromium takes seconds: every test shares one, each with its own pages and origin."""
    started = Browser()
    yield started
    started.close()


@pytest.fixture
def page_server():
    """page_server({"/": html}) → a PageServer on a fresh port: a fresh origin, so no test sees another's storage."""
    servers = []

    def serve(pages: dict[str, str]) -> PageServer:
        servers.append(PageServer(pages))
        return servers[-1]

    yield serve
    for server in servers:
        server.close()


class Stack:
    """ingress + settings, dm and notify workers on a fresh vhost, the ingress's broker link
    through a proxy a test can cut; CORS allows the test page's origin."""

    def __init__(self, base_env, make_database, origin):
        self.secret = base_env["JWT_SECRET"]
        self.proxy = TcpProxy("127.0.0.1", 5672)
        self.env = {**base_env, "PORT": str(free_port()), "HEALTH_PORT": "0", "CORS_ALLOWED_ORIGINS": origin,
                    "SETTINGS_DATABASE_URL": make_database("settings"), "DM_DATABASE_URL": make_database("dm"),
                    "NOTIFY_DATABASE_URL": make_database("notify")}
        self.port = int(self.env["PORT"])
        self.base = f"http://127.0.0.1:{self.port}"
        run_cli("topology", env=self.env)
        self.workers = [workers_cli("run", name, env=self.env) for name in ("settings", "dm", "notify")]
        self.ingress = None
        self.start_ingress()
        for proc in self.workers:
            wait_for(lambda: any(l.get("msg") == "answering queries" for l in proc.logs()), message="queries")

    def start_ingress(self):
        self.ingress = workers_cli("serve", env={**self.env, "RABBITMQ_URL": rabbit.url_via(
            self.env["RABBITMQ_URL"], self.proxy.port)})
        wait_for(lambda: ready(self.port), timeout=30, message="ingress ready")

    def stop_ingress(self):
        self.ingress.terminate()

    def close(self):
        procs = [self.ingress, *self.workers]
        for proc in procs:  # all at once: each takes seconds to drain
            if proc.alive():
                proc.proc.terminate()
        for proc in procs:
            proc.terminate()
        self.proxy.restore()

    def token(self, user, ttl_s=600):
        return auth.encode(self.secret, user, ttl_s=ttl_s)

    def post(self, user, body):
        status, answer, _ = call(self.port, "POST", EVENTS, self.token(user), body)
        assert status == 202, answer
        return answer

    def dm(self, sql, *args):
        return query(self.env["DM_DATABASE_URL"], sql, args)


@pytest.fixture
def origin(page_server):
    """A blank page on a fresh origin, allowed by the stack's CORS."""
    return page_server({"/": BLANK}).origin


@pytest.fixture
def stack(base_env, make_database, origin):
    started = Stack(base_env, make_database, origin)
    yield started
    started.close()
