"""shared/pika_internals.py: the start-up self-check, the fall back to pika's public API, and a bug
on the publish path answered 500 (not 503), in the real ingress under gunicorn on the real broker.

The gunicorn workers load this module's WSGI entries (`fallback_app`, `broken_app`): the real
ingress app, after a patch applied in the worker process before it connects. No production
switch is involved.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pika
import pytest

from ingress import app as ingress_app
from shared import pika_internals
from tests.support.events import event
from tests.support.ingress_server import Ingress, answers
from tests.support.net import free_port
from tests.support import auth, rabbit
from tests.support.processes import Process
from tests.support.rabbit import wait_for

QUEUE = "internals-watch"
REPO = Path(__file__).resolve().parents[2]


class _ConnectionWithoutInternals:
    """Stands for a pika release whose Connection no longer has _output_marshaled_frames."""


class _PatchedApp:
    """The ingress's WSGI entry, with `patch` run in the gunicorn worker before it connects."""

    def __init__(self, patch):
        self._patch, self._patched = patch, False

    def _ensure(self) -> None:
        if not self._patched:
            self._patched = True
            self._patch()

    def warm(self) -> None:
        self._ensure()
        ingress_app.application.warm()

    def __call__(self, environ, start_response):
        self._ensure()
        return ingress_app.application(environ, start_response)


def _self_check_sees_old_pika() -> None:
    pika_internals.self_check(
        required=((_ConnectionWithoutInternals, "_output_marshaled_frames"), *pika_internals.REQUIRED))


def _publish_path_bug() -> None:
    def publish(channel, *_args):
        channel.connection._output_marshaled_frames_renamed  # AttributeError, as after a pika upgrade
    pika_internals.publish = publish


fallback_app = _PatchedApp(_self_check_sees_old_pika)
broken_app = _PatchedApp(_publish_path_bug)


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def watcher(broker_url):
    client = rabbit.Rabbit(broker_url)
    client.channel.exchange_declare("app.events", exchange_type="topic", durable=True)
    client.channel.queue_declare(QUEUE, durable=True)
    client.channel.queue_bind(QUEUE, "app.events", routing_key="user.settings.submitted")
    yield client
    client.close()


@pytest.fixture(autouse=True)
def empty_queue(watcher):
    watcher.channel.queue_purge(QUEUE)


def _gunicorn(entry: str, broker_url: str, jwt_secret: str):
    port = free_port()
    proc = Process([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn_conf.py", entry],
                   env={"RABBITMQ_URL": broker_url, **auth.ingress_env(jwt_secret), "PORT": str(port),
                        "WEB_CONCURRENCY": "1", "PUBLISH_TIMEOUT_S": "3", "PYTHONUNBUFFERED": "1"})
    app = Ingress(proc, port, jwt_secret)
    try:
        wait_for(lambda: answers(app) and app.readiness(2) == {200}, timeout=30, message="ingress ready")
    except AssertionError:
        proc.terminate()
        raise AssertionError(f"ingress did not become ready:\n{proc.text()[-3000:]}")
    return app


@pytest.fixture(scope="module")
def fallback_ingress(broker_url, watcher, jwt_secret):
    app = _gunicorn("tests.ingress.test_pika_internals:fallback_app", broker_url, jwt_secret)
    yield app
    app.proc.terminate()


@pytest.fixture(scope="module")
def broken_ingress(broker_url, watcher, jwt_secret):
    app = _gunicorn("tests.ingress.test_pika_internals:broken_app", broker_url, jwt_secret)
    yield app
    app.proc.terminate()


def _lines(app: Ingress, msg: str) -> list[dict]:
    return [line for line in app.proc.logs() if line.get("msg", "").startswith(msg)]


# ---- the self-check ------------------------------------------------------------------------
def test_the_self_check_passes_on_the_pinned_pika():
    pinned = re.search(r"^pika==(\S+) ", (REPO / "requirements.lock").read_text(), re.M).group(1)
    assert pika.__version__ == pinned
    assert pika_internals.self_check() is True and pika_internals.FAST_PATH_ACTIVE is True


def test_a_connection_without_the_private_attributes_turns_the_fast_path_off(monkeypatch, logged):
    monkeypatch.setattr(pika_internals, "FAST_PATH_ACTIVE", True)
    assert pika_internals.check_connection(SimpleNamespace(_transport=None)) is False
    assert pika_internals.check_connection(SimpleNamespace()) is False
    assert pika_internals.FAST_PATH_ACTIVE is False
    assert [r["message"] for r in logged] == ["pika fast path disabled, publishing through pika's public API"]


# ---- the real ingress, falling back ------------------------------------------------------------
def test_an_ingress_that_falls_back_still_publishes_with_confirms(fallback_ingress, watcher):
    seed = event()
    status, _, body = fallback_ingress.post(seed)
    assert (status, body) == (202, {"accepted": [seed["client_generated_id"]]})  # 202: confirmed
    [(props, _raw)] = watcher.drain(QUEUE)
    # the encoded event properties went through pika's BasicProperties on the public path
    assert (props.message_id, props.type, props.delivery_mode) == (seed["client_generated_id"], seed["event_type"], 2)
    assert props.headers["source_service"] == "frontend" and props.timestamp
    # a batch and an unroutable type behave as on the fast path
    user = seed["user_id"]
    assert fallback_ingress.post([event(user_id=user) for _ in range(5)])[0] == 202
    assert watcher.depth(QUEUE) == 5
    assert fallback_ingress.post(event(event_type="app.settings.updated", data={"theme": "dark"}))[0] == 422


def test_the_fall_back_is_one_warning_and_the_active_path_is_logged(fallback_ingress):
    warnings = _lines(fallback_ingress, "pika fast path disabled")
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "_ConnectionWithoutInternals._output_marshaled_frames" in warnings[0]["reason"]
    assert not _lines(fallback_ingress, "pika fast path active")


# ---- a bug on the publish path ------------------------------------------------------------------
def test_a_bug_on_the_publish_path_is_500_with_json_and_a_traceback_not_503(broken_ingress, watcher):
    assert _lines(broken_ingress, "pika fast path active")  # the genuine self-check passed
    status, headers, body = broken_ingress.post(event())
    assert status == 500 and headers["content-type"] == "application/json"
    assert body == {"error": "internal_error", "detail": "internal error while publishing"}
    assert "retry-after" not in headers
    [line] = wait_for(lambda: _lines(broken_ingress, "publish failed"), message="the bug logged")
    assert line["level"] == "error" and "AttributeError" in line["exception"]
    assert line["traceback"].startswith("Traceback") and "_output_marshaled_frames_renamed" in line["traceback"]
    assert broken_ingress.readiness(2) == {200}  # the broker is fine: only a 503 would say otherwise
    assert watcher.depth(QUEUE) == 0


@pytest.fixture
def logged():
    from loguru import logger
    records = []
    sink = logger.add(lambda m: records.append(m.record), level="WARNING")
    yield records
    logger.remove(sink)
