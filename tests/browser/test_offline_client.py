"""The offline client (ingress/client/spotter.js) in headless Chromium, against the real ingress and
the settings, dm and notify workers: imported cross-origin from the ingress as an app would, with
its queue in the browser's IndexedDB.

Backoff is scaled down where a test waits through it (retryBaseMs); the default schedule itself
(2, 4, 8, 16, 32 s, capped at 60) is checked in tests/ingress/test_client_module.py.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.support.db import query
from tests.support.events import event
from tests.support.http import call
from tests.support.rabbit import wait_for


# Puts a client on window.client. Every event it emits is kept in window.seen; every POST of
# events it makes is kept (time, ids, status) in window.posts, observed on the way past.
OPEN_CLIENT = """(async () => {
  const { SpotterClient } = await import(%(base)s + '/api/v1/client/spotter.js');
  window.seen = []; window.posts = []; window.tokenCalls = [];
  window.tokens = %(tokens)s;
  const observed = async (url, init) => {
    const started = Date.now();
    const ids = url.endsWith('/notify/events') ? [].concat(JSON.parse(init.body)).map((e) => e.client_generated_id) : null;
    try {
      const response = await fetch(url, init);
      if (ids) window.posts.push({ at: started, ids, status: response.status });
      return response;
    } catch (error) {
      if (ids) window.posts.push({ at: started, ids, status: 0 });
      throw error;
    }
  };
  window.client = new SpotterClient({
    baseUrl: %(base)s, userId: %(user)s, fetch: observed,
    getToken: async ({ forceRefresh }) => {
      window.tokenCalls.push(forceRefresh);
      return window.tokens.length > 1 && (forceRefresh || window.tokenCalls.length === 1) ? window.tokens.shift() : window.tokens[0];
    },
    ...%(options)s,
  });
  for (const type of ['sent', 'applied', 'rejected', 'stuck', 'paused', 'inbox', 'result', 'error']) {
    client.addEventListener(type, (e) => window.seen.push({ type, ...e.detail }));
  }
  return true;
})()"""


@pytest.fixture
def tabs(browser, origin):
    opened = []

    def open_tab():
        opened.append(browser.new_page(origin + "/"))
        return opened[-1]

    yield open_tab
    for page in opened:
        try:
            page.evaluate("window.client && window.client.close()")
        finally:
            page.close()


def open_client(page, stack, user, tokens=None, **options):
    page.evaluate(OPEN_CLIENT % {"base": json.dumps(stack.base), "user": json.dumps(user),
                                 "tokens": json.dumps(tokens or [stack.token(user)]),
                                 "options": json.dumps({"inbox": False, **options})})


def seen(page, kind):
    return page.evaluate(f"window.seen.filter((e) => e.type === {json.dumps(kind)})")


def states(page):
    return [p["state"] for p in page.evaluate("client.pending()")]


def conversation_events(page, conversation, count, **first):
    """Sends dm.conversation.started with someone, then `count` messages m00, m01, …; their ids."""
    started = {"conversation_id": conversation, "participant_ids": [str(uuid.uuid4())], **first}
    script = f"""(async () => {{
      const ids = [await client.send('dm.conversation.started', {json.dumps(started)})];
      for (let i = 0; i < {count}; i++) {{
        ids.push(await client.send('dm.message.sent', {{ conversation_id: {json.dumps(conversation)},
          message_id: crypto.randomUUID(), body: 'm' + String(i).padStart(2, '0') }}));
      }}
      return ids;
    }})()"""
    return page.evaluate(script)


def test_events_sent_while_the_ingress_is_down_survive_a_reload_and_land_once_in_order(stack, tabs):
    user, conversation = str(uuid.uuid4()), str(uuid.uuid4())
    page = tabs()
    open_client(page, stack, user, retryBaseMs=500)
    stack.stop_ingress()
    ids = conversation_events(page, conversation, 49)
    assert len(set(ids)) == 50
    assert states(page) == ["queued"] * 50  # on disk, none sent
    page.reload()  # whatever was in memory is gone; IndexedDB is not
    open_client(page, stack, user, retryBaseMs=500)  # the module from the browser's cache: the ingress is down
    assert [p["id"] for p in page.evaluate("client.pending()")] == ids
    stack.start_ingress()

    wait_for(lambda: stack.dm("SELECT count(*) FROM messages WHERE conversation_id = %s", conversation)[0][0] == 49,
             timeout=60, message="49 messages stored")
    bodies = [b for b, in stack.dm("SELECT body FROM messages WHERE conversation_id = %s ORDER BY seq", conversation)]
    assert bodies == [f"m{i:02d}" for i in range(49)]  # once each, in the order sent
    # every event's receipt came back applied, and the queue is empty
    wait_for(lambda: len(seen(page, "applied")) == 50, timeout=30, message="50 applied receipts")
    assert sorted(e["id"] for e in seen(page, "applied")) == sorted(ids)
    assert page.evaluate("client.pending({includeSent: true})") == []
    accepted = [i for p in page.evaluate("window.posts") if p["status"] == 202 for i in p["ids"]]
    assert sorted(accepted) == sorted(ids)  # each posted once it could be: no event accepted twice


def test_a_503_burst_backs_off_honours_retry_after_goes_stuck_and_recovers_on_retry(stack, tabs):
    """The ingress answers 503 (Retry-After: 2) while its broker link is cut."""
    user = str(uuid.uuid4())
    page = tabs()
    open_client(page, stack, user, retryBaseMs=500)
    stack.proxy.cut()
    wait_for(lambda: call(stack.port, "GET", "/readyz")[0] == 503, message="the ingress lost its broker")
    [event_id] = page.evaluate("Promise.all([client.send('user.settings.submitted', "
                               "{weight: {value: 80, unit: 'kg'}, age: 30, training_days_per_week: 4})])")
    wait_for(lambda: seen(page, "stuck"), timeout=60, message="the event stuck after 5 retries")
    posts = page.evaluate("window.posts")
    assert [p["status"] for p in posts] == [503] * 6 and all(p["ids"] == [event_id] for p in posts)
    gaps = [(b["at"] - a["at"]) / 1000 for a, b in zip(posts, posts[1:])]
    # nominal 0.5, 1, 2, 4, 8 s (2, 4, 8, 16, 32 scaled by 1/4) with up to 10 % jitter, never
    # sooner than the ingress's Retry-After: 2
    for gap, nominal in zip(gaps, [2, 2, 2, 4, 8]):
        assert nominal <= gap <= nominal * 1.1 + 0.5, gaps
    [stuck] = page.evaluate("client.pending()")
    assert (stuck["id"], stuck["state"], stuck["attempts"]) == (event_id, "stuck", 6)
    time.sleep(2)
    assert len(page.evaluate("window.posts")) == 6  # stuck: not retried on its own

    stack.proxy.restore()
    wait_for(lambda: call(stack.port, "GET", "/readyz")[0] == 200, message="the broker is back")
    page.evaluate(f"client.retry({json.dumps(event_id)})")
    wait_for(lambda: seen(page, "applied"), timeout=30, message="applied after the retry")
    assert query(stack.env["SETTINGS_DATABASE_URL"], "SELECT age FROM user_settings WHERE user_id = %s",
                 (user,)) == [(30,)]


def test_a_schema_violation_in_a_batch_rejects_only_that_event_with_its_field(stack, tabs, browser):
    user, conversation = str(uuid.uuid4()), str(uuid.uuid4())
    page = tabs()
    open_client(page, stack, user)
    browser.set_offline(True)
    try:
        ids = page.evaluate(f"""(async () => [
          await client.send('dm.conversation.started', {{conversation_id: '{conversation}', participant_ids: ['{uuid.uuid4()}']}}),
          await client.send('dm.message.sent', {{conversation_id: '{conversation}', message_id: crypto.randomUUID(), body: 'first'}}),
          await client.send('dm.message.sent', {{conversation_id: '{conversation}', message_id: crypto.randomUUID(), body: '   '}}),
          await client.send('dm.message.sent', {{conversation_id: '{conversation}', message_id: crypto.randomUUID(), body: 'third'}}),
        ])()""")
    finally:
        browser.set_offline(False)  # `online`: the client flushes the four as one batch

    wait_for(lambda: seen(page, "rejected"), timeout=20, message="the blank message rejected")
    [rejected] = seen(page, "rejected")
    assert rejected["id"] == ids[2] and rejected["status"] == 422 and rejected["source"] == "ingress"
    assert rejected["error"]["error"] == "schema_violation" and "body" in rejected["error"]["field"]
    wait_for(lambda: stack.dm("SELECT count(*) FROM messages WHERE conversation_id = %s", conversation)[0][0] == 2,
             message="the valid messages stored")
    assert [b for b, in stack.dm("SELECT body FROM messages ORDER BY seq")] == ["first", "third"]
    posts = page.evaluate("window.posts")
    assert (posts[0]["status"], posts[0]["ids"]) == (422, ids)  # the batch as sent
    assert (posts[1]["status"], posts[1]["ids"]) == (202, [ids[0], ids[1], ids[3]])  # re-sent without it
    wait_for(lambda: states(page) == ["rejected"], message="only the rejected one left, kept")
    assert page.evaluate(f"client.dismiss('{ids[2]}').then(() => client.pending())") == []


def test_an_expired_token_is_refreshed_once_and_a_refused_one_pauses(stack, tabs):
    user = str(uuid.uuid4())
    page = tabs()
    settings = "{weight: {value: 80, unit: 'kg'}, age: 41, training_days_per_week: 3}"
    open_client(page, stack, user, tokens=[stack.token(user, ttl_s=-60), stack.token(user)])
    event_id = page.evaluate(f"client.send('user.settings.submitted', {settings})")
    wait_for(lambda: seen(page, "sent"), message="sent with the refreshed token")
    statuses = [p["status"] for p in page.evaluate("window.posts")]
    assert statuses == [401, 202]
    assert page.evaluate("window.tokenCalls.slice(0, 2)") == [False, True]
    assert page.evaluate("window.tokenCalls.filter((f) => f).length") == 1  # asked for a fresh one once
    wait_for(lambda: seen(page, "applied"), message="applied")
    assert seen(page, "applied")[0]["id"] == event_id

    # a token that stays refused: paused and reported, the event kept; resumed once signed in again
    other = tabs()
    open_client(other, stack, user, tokens=[stack.token(user, ttl_s=-60)], dbName="second-session")
    second = other.evaluate(f"client.send('user.settings.submitted', {settings})")
    wait_for(lambda: seen(other, "paused"), message="paused")
    assert seen(other, "paused")[0]["status"] == 401
    assert [p["status"] for p in other.evaluate("window.posts")] == [401, 401]
    assert states(other) == ["queued"]
    other.evaluate(f"window.tokens = [{json.dumps(stack.token(user))}]; client.resume()")
    wait_for(lambda: [e["id"] for e in seen(other, "applied")] == [second], message="applied after resume")


def test_two_tabs_never_post_the_same_event(stack, tabs, browser):
    user, conversation = str(uuid.uuid4()), str(uuid.uuid4())
    first, second = tabs(), tabs()
    for page in (first, second):
        open_client(page, stack, user)
    browser.set_offline(True)
    try:  # both tabs queue into the same IndexedDB while offline
        ids = conversation_events(first, conversation, 20)
        ids += second.evaluate(f"""(async () => {{ const ids = [];
          for (let i = 20; i < 40; i++) ids.push(await client.send('dm.message.sent', {{
            conversation_id: '{conversation}', message_id: crypto.randomUUID(), body: 'm' + i }}));
          return ids; }})()""")
    finally:
        browser.set_offline(False)  # both tabs hear `online` at once and both flush

    wait_for(lambda: stack.dm("SELECT count(*) FROM messages WHERE conversation_id = %s", conversation)[0][0] == 40,
             timeout=30, message="40 messages stored")
    posted = [i for page in (first, second) for p in page.evaluate("window.posts") for i in p["ids"]]
    assert sorted(posted) == sorted(ids)  # each event posted once, by one tab or the other
    # and each tab's app heard every receipt, whichever tab read it
    for page in (first, second):
        wait_for(lambda: len({e["id"] for e in seen(page, "applied")}) == 41, timeout=30, message="receipts")


def test_receipts_report_a_worker_rejection_with_its_reason_and_an_applied_event(stack, tabs):
    alice, carol = str(uuid.uuid4()), str(uuid.uuid4())
    conversation = str(uuid.uuid4())  # carol's, with someone else: alice may not write in it
    stack.post(carol, event("dm.conversation.started", user_id=carol, data={
        "conversation_id": conversation, "participant_ids": [str(uuid.uuid4())]}))
    wait_for(lambda: stack.dm("SELECT count(*) FROM conversations WHERE conversation_id = %s", conversation)[0][0],
             message="carol's conversation")
    page = tabs()
    open_client(page, stack, alice)
    forbidden = page.evaluate(f"client.send('dm.message.sent', {{conversation_id: '{conversation}', "
                              f"message_id: crypto.randomUUID(), body: 'let me in'}})")
    applied = page.evaluate("client.send('user.settings.submitted', "
                            "{weight: {value: 70, unit: 'kg'}, age: 25, training_days_per_week: 5})")
    wait_for(lambda: seen(page, "rejected") and seen(page, "applied"), timeout=30, message="both receipts")
    [rejected] = seen(page, "rejected")
    assert (rejected["id"], rejected["source"], rejected["error"]["error"]) == (forbidden, "worker", "forbidden")
    assert rejected["error"]["detail"]
    assert [e["id"] for e in seen(page, "applied")] == [applied]
    assert [(p["id"], p["state"]) for p in page.evaluate("client.pending()")] == [(forbidden, "rejected")]


def test_the_inbox_delivers_a_direct_message_to_the_recipients_page(stack, tabs):
    sender, bob = str(uuid.uuid4()), str(uuid.uuid4())
    page = tabs()
    open_client(page, stack, bob, inbox=True)
    conversation = str(uuid.uuid4())
    stack.post(sender, event("dm.conversation.started", user_id=sender, data={
        "conversation_id": conversation, "participant_ids": [bob]}))
    stack.post(sender, event("dm.message.sent", user_id=sender, data={
        "conversation_id": conversation, "message_id": str(uuid.uuid4()), "body": "leg day at 6?"}))

    def messages():
        return [e["item"] for e in seen(page, "inbox") if e["item"]["event_type"] == "dm.message.persisted"]

    wait_for(messages, timeout=20, message="the message in bob's page")
    [item] = messages()
    assert item["data"]["body"] == "leg day at 6?" and item["data"]["conversation_id"] == conversation
