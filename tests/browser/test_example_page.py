"""The example page `workers dev` serves (workers/ops/devpage.py): the browser client at work against
the real ingress, settings, dm and notify workers, as a frontend developer would see it."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest

from ingress.auth import BearerVerifier
from tests.support.db import query
from tests.support import auth
from tests.support.browser import BrowserError
from tests.support.processes import run_cli, workers_cli
from tests.support.rabbit import wait_for
from tests.support.http import ready
from tests.support.net import free_port
from workers.ops.devpage import DevPage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def devpage_for(jwt_secret):
    """devpage_for(ingress_url) → a started DevPage on a free port, minting test tokens."""
    pages = []

    def start(ingress_url: str) -> DevPage:
        pages.append(DevPage(ingress_url, 0, lambda user_id: auth.encode(jwt_secret, user_id)).start())
        return pages[-1]

    yield start
    for page in pages:
        page.stop()


def test_the_page_names_its_ingress_and_its_tokens_pass_the_ingress_verifier(devpage_for, jwt_secret):
    page = devpage_for("http://127.0.0.1:8080/")
    status, body = _get(page.url + "/")
    assert status == 200
    assert 'content="http://127.0.0.1:8080"' in body.decode()  # the client is imported from there
    user = str(uuid.uuid4())
    status, body = _get(f"{page.url}/token?user_id={user.upper()}")
    assert status == 200
    assert BearerVerifier(auth.jwt_config(jwt_secret)).subject(f"Bearer {json.loads(body)['token']}") == user
    assert _get(f"{page.url}/token?user_id=nobody")[0] == 400
    assert _get(f"{page.url}/nothing")[0] == 404
    # another host name pointed at 127.0.0.1 (DNS rebinding) does not get tokens
    assert _get(f"{page.url}/token?user_id={user}", {"Host": "evil.example:80"})[0] == 421


@pytest.fixture
def example(base_env, make_database, devpage_for):
    """(DevPage, env): the page and the stack it talks to, with CORS allowing the page's origin."""
    port = free_port()
    page = devpage_for(f"http://127.0.0.1:{port}")
    env = {**base_env, "PORT": str(port), "HEALTH_PORT": "0", "CORS_ALLOWED_ORIGINS": page.url,
           "SETTINGS_DATABASE_URL": make_database("settings"), "DM_DATABASE_URL": make_database("dm"),
           "NOTIFY_DATABASE_URL": make_database("notify")}
    run_cli("topology", env=env)
    workers = [workers_cli("run", name, env=env) for name in ("settings", "dm", "notify")]
    ingress = workers_cli("serve", env=env)
    try:
        wait_for(lambda: ready(port), message="ingress ready")
        for proc in workers:  # receipts and the inbox are queries these answer
            wait_for(lambda: any(l.get("msg") == "answering queries" for l in proc.logs()), message="queries")
        yield page, env
    finally:
        for proc in [ingress, *workers]:
            proc.terminate()


def _items(tab, selector: str) -> list[dict]:
    return tab.evaluate(f"[...document.querySelectorAll({json.dumps(selector)})]"
                        ".map(li => ({...li.dataset, text: li.innerText}))")


def test_the_page_shows_an_applied_receipt_a_rejected_event_and_its_inbox(browser, example, tmp_path):
    page, env = example
    tab = browser.new_page(page.url)
    try:
        try:  # the client loaded from the ingress, cross-origin
            tab.text("body[data-ready]", timeout_s=20)
        except BrowserError:
            pytest.fail(f"the page did not get ready: {tab.text('#status')}\n{tab.console()}")
        user = tab.text("#user")
        assert str(uuid.UUID(user)) == user
        tab.evaluate("document.querySelector('#send-settings').click()")
        tab.evaluate("document.querySelector('#send-invalid').click()")
        tab.evaluate("document.querySelector('#buddy-writes').click()")

        wait_for(lambda: [r for r in _items(tab, "#receipts li") if r["status"] == "applied"], timeout=30,
                 message=f"an applied receipt: {_items(tab, '#receipts li')}")
        wait_for(lambda: [q for q in _items(tab, "#queue li") if q["state"] == "rejected"], timeout=30,
                 message=f"the rejected event in the queue: {_items(tab, '#queue li')}")
        # the inbox: the buddy's conversation with this user and the message in it
        wait_for(lambda: any("dm.message.persisted" in i["text"] for i in _items(tab, "#inbox li")),
                 timeout=30, message=f"the buddy's message in the inbox: {_items(tab, '#inbox li')}")

        applied = [r for r in _items(tab, "#receipts li") if r["status"] == "applied"]
        assert len(applied) == 1 and "user.settings.submitted" in applied[0]["text"]
        rejected = [q for q in _items(tab, "#queue li") if q["state"] == "rejected"]
        assert len(rejected) == 1 and "age" in rejected[0]["text"]  # the 422's field, shown as the reason
        assert "schema_violation" in rejected[0]["text"]

        shot = tmp_path / "example-page.png"
        tab.screenshot(shot)
        assert shot.read_bytes().startswith(PNG_SIGNATURE) and shot.stat().st_size > 10_000
    finally:
        tab.close()
    rows = query(env["SETTINGS_DATABASE_URL"],
                 "SELECT age, weight_value, weight_unit FROM user_settings WHERE user_id = %s", (user,))
    assert [(age, float(weight), unit) for age, weight, unit in rows] == [(30, 80.0, "kg")]
