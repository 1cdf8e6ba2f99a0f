"""AI worker on the real broker and database, against a local OpenWebUI stand-in over real HTTP:
answers stored and announced, failures retried or dead-lettered, prompts private to their owner,
and neither the API key nor a prompt ever written to a log."""
from __future__ import annotations

import uuid

import pytest

from tests.support.db import processed, query
from tests.support.events import dumps, event
from tests.support.http import call
from tests.support.openwebui_standin import OpenWebUIStandin, Reply
from tests.support.rabbit import wait_for
from tests.support.bus import dead_letters, outcomes
from tests.support.processes import answering_queries

EVENTS = "/api/v1/notify/events"


# ---- helpers ----------------------------------------------------------------------------------

@pytest.fixture
def openwebui():
    standin = OpenWebUIStandin().start()
    yield standin
    standin.stop()


@pytest.fixture
def ai_worker(start_worker, make_database, openwebui):
    """start(**env) → (worker process, its database), talking to the stand-in unless env says otherwise."""
    def start(**env):
        db = make_database("ai")
        proc = start_worker("ai", AI_DATABASE_URL=db, **{**openwebui.env(), **env})
        wait_for(lambda: any(l.get("msg") == "consuming" for l in proc.logs()), message="ai worker consuming")
        return proc, db
    return start


def prompt_text() -> str:
    return f"How many sets of squats on leg day? ({uuid.uuid4().hex})"


def submit(rmq, user: str, prompt: str, prompt_id: str | None = None, body: dict | None = None) -> dict:
    body = body or event("ai.prompt.submitted", user_id=user,
                         data={"prompt_id": prompt_id or str(uuid.uuid4()), "prompt": prompt})
    rmq.publish("app.events", "ai.prompt.submitted", dumps(body), message_id=body["client_generated_id"],
                type="ai.prompt.submitted")
    return body


def responses(db, prompt_id: str) -> list[tuple]:
    return query(db, "SELECT status, answer, model, failure_reason FROM responses WHERE prompt_id = %s",
                 (prompt_id,))


def assert_never_logged(proc, *secrets: str) -> None:
    text = proc.text()
    for secret in secrets:
        assert secret not in text


# ---- stories ----------------------------------------------------------------------------------

def test_answer_is_stored_emitted_and_read_by_its_owner(ai_worker, openwebui, rmq, start_ingress, bearer):
    # Given the ai worker and the ingress
    worker, db = ai_worker()
    port = start_ingress()
    ready = rmq.tap("app.events", "ai.response.ready")
    user, prompt_id, prompt = str(uuid.uuid4()), str(uuid.uuid4()), prompt_text()
    openwebui.script(Reply(200, content="Four sets of eight, two minutes' rest."))
    # When the app submits a prompt
    body = event("ai.prompt.submitted", user_id=user, data={"prompt_id": prompt_id.upper(), "prompt": prompt})
    status, reply, _ = call(port, "POST", EVENTS, bearer(user), body)
    assert status == 202, reply
    # Then the answer is announced, once, under the canonical prompt id
    (ready_event,) = outcomes(rmq, ready)
    assert ready_event["user_id"] == user
    assert ready_event["data"] == {"prompt_id": prompt_id, "answer": "Four sets of eight, two minutes' rest.",
                                   "model": openwebui.model, "finish_reason": "stop"}
    # and stored with the prompt
    assert query(db, "SELECT user_id::text, prompt FROM prompts WHERE prompt_id = %s", (prompt_id,)) == [(user, prompt)]
    assert responses(db, prompt_id) == [("answered", "Four sets of eight, two minutes' rest.", openwebui.model, None)]
    # and the endpoint got the prompt, the model and the key, once
    (seen,) = openwebui.requests
    assert seen.path == "/api/chat/completions"
    assert seen.authorization == f"Bearer {openwebui.api_key}"
    assert seen.body == {"model": openwebui.model, "messages": [{"role": "user", "content": prompt}], "stream": False}
    # and its owner reads it
    wait_for(lambda: answering_queries(worker), message="ai worker answering queries")
    status, answer, _ = call(port, "GET", f"/api/v1/ai/prompts/{prompt_id}", bearer(user))
    assert status == 200, answer
    assert {k: answer[k] for k in ("prompt_id", "status", "answer", "model", "finish_reason")} == {
        "prompt_id": prompt_id, "status": "answered", "answer": "Four sets of eight, two minutes' rest.",
        "model": openwebui.model, "finish_reason": "stop"}
    assert answer["created_at"] <= answer["answered_at"]
    assert_never_logged(worker, openwebui.api_key, prompt)


def test_server_error_then_success_gives_one_answer_after_a_retry(ai_worker, openwebui, rmq):
    worker, db = ai_worker()
    ready = rmq.tap("app.events", "ai.response.ready")
    openwebui.script(500, 200)
    prompt_id, prompt = str(uuid.uuid4()), prompt_text()
    submit(rmq, str(uuid.uuid4()), prompt, prompt_id)
    (ready_event,) = outcomes(rmq, ready)
    # the second call's answer, stored once
    assert ready_event["data"]["answer"] == "stand-in answer #2"
    assert responses(db, prompt_id) == [("answered", "stand-in answer #2", openwebui.model, None)]
    assert openwebui.calls == 2
    assert [l["error"] for l in worker.logs() if l.get("msg") == "event retried"] == [
        "TransientError: the AI endpoint answered 500"]
    assert rmq.depth("ai.dead") == 0
    assert_never_logged(worker, openwebui.api_key, prompt)


def test_rejected_and_invalid_prompts_are_dead_lettered_while_the_next_is_answered(ai_worker, openwebui, rmq):
    worker, db = ai_worker()
    openwebui.script(400, 200)
    user = str(uuid.uuid4())
    blank = submit(rmq, user, " \n\t ")                 # the schema refuses it: no call
    rejected_prompt, good_prompt = prompt_text(), prompt_text()
    rejected = submit(rmq, user, rejected_prompt)     # the endpoint answers 400
    good = submit(rmq, user, good_prompt)
    processed(db, good)
    dead = dead_letters(rmq, "ai", 2)
    assert dead[blank["client_generated_id"]]["x-dead-reason"] == "invalid"
    assert dead[blank["client_generated_id"]]["x-dead-field"] == "data.prompt"
    headers = dead[rejected["client_generated_id"]]
    assert headers["x-dead-reason"] == "ai_rejected"
    assert "400" in headers["x-dead-detail"]
    assert rejected_prompt not in headers["x-dead-detail"] + headers["x-last-error"]
    # nothing stored for the rejected prompt; the next one answered
    assert query(db, "SELECT count(*) FROM prompts WHERE prompt_id = %s",
                 (rejected["data"]["prompt_id"],)) == [(0,)]
    assert responses(db, good["data"]["prompt_id"]) == [("answered", "stand-in answer #2", openwebui.model, None)]
    assert openwebui.calls == 2
    assert_never_logged(worker, openwebui.api_key, rejected_prompt, good_prompt)


def test_a_timeout_is_retried(ai_worker, openwebui, rmq):
    worker, db = ai_worker(OPENWEBUI_TIMEOUT_S=1)
    openwebui.script(Reply(200, delay_s=3), 200)
    prompt = prompt_text()
    body = submit(rmq, str(uuid.uuid4()), prompt)
    processed(db, body)
    assert responses(db, body["data"]["prompt_id"]) == [("answered", "stand-in answer #2", openwebui.model, None)]
    assert openwebui.calls == 2
    retried = [l for l in worker.logs() if l.get("msg") == "event retried"]
    assert len(retried) == 1 and "did not answer within 1 s" in retried[0]["error"]
    assert_never_logged(worker, openwebui.api_key, prompt)


def test_an_endpoint_that_keeps_failing_or_answers_nothing_is_dead_lettered(ai_worker, openwebui, rmq):
    worker, db = ai_worker()
    # three 500s: every attempt (MAX_ATTEMPTS=3) fails
    openwebui.script(500, 500, 500)
    failing = submit(rmq, str(uuid.uuid4()), prompt_text())
    (headers,) = dead_letters(rmq, "ai", 1).values()
    assert headers["x-dead-reason"] == "retries_exhausted" and headers["x-attempts"] == 3
    assert openwebui.calls == 3
    # a 200 without an answer in it
    openwebui.script(Reply(200, body=b'{"object": "chat.completion", "choices": []}'))
    empty = submit(rmq, str(uuid.uuid4()), prompt_text())
    (headers,) = dead_letters(rmq, "ai", 1).values()
    assert headers["x-dead-reason"] == "ai_bad_response"
    assert query(db, "SELECT count(*) FROM prompts WHERE prompt_id IN (%s, %s)",
                 (failing["data"]["prompt_id"], empty["data"]["prompt_id"])) == [(0,)]


def test_without_an_endpoint_the_prompt_fails_as_not_configured(ai_worker, openwebui, rmq, start_ingress, bearer):
    # Given no OPENWEBUI_URL (the stand-in runs, but nobody points the worker at it)
    worker, db = ai_worker(OPENWEBUI_URL="")
    port = start_ingress()
    failed = rmq.tap("app.events", "ai.response.failed")
    ready = rmq.tap("app.events", "ai.response.ready")
    user, prompt_id = str(uuid.uuid4()), str(uuid.uuid4())
    submit(rmq, user, prompt_text(), prompt_id)
    # Then: failed, not_configured, and no call and no answer of any kind
    (failed_event,) = outcomes(rmq, failed)
    assert failed_event["data"] == {"prompt_id": prompt_id, "reason": "not_configured"}
    assert responses(db, prompt_id) == [("failed", None, None, "not_configured")]
    assert openwebui.calls == 0 and rmq.depth(ready) == 0
    assert any(l.get("msg", "").startswith("OPENWEBUI_URL is not set") for l in worker.logs())
    wait_for(lambda: answering_queries(worker), message="ai worker answering queries")
    status, answer, _ = call(port, "GET", f"/api/v1/ai/prompts/{prompt_id}", bearer(user))
    assert status == 200, answer
    assert answer["status"] == "failed" and answer["reason"] == "not_configured" and "answer" not in answer


def test_the_same_prompt_twice_costs_one_call_and_gives_one_answer(ai_worker, openwebui, rmq):
    worker, db = ai_worker()
    ready = rmq.tap("app.events", "ai.response.ready")
    user, prompt_id, prompt = str(uuid.uuid4()), str(uuid.uuid4()), prompt_text()
    # the same event twice, then the same prompt under a new event id (a client that re-sent it)
    first = submit(rmq, user, prompt, prompt_id)
    submit(rmq, user, prompt, body=first)
    again = submit(rmq, user, prompt, prompt_id)
    processed(db, again)
    wait_for(lambda: sum(l.get("msg") == "duplicate skipped" for l in worker.logs()) == 1, message="duplicate skipped")
    assert len(outcomes(rmq, ready)) == 1
    assert openwebui.calls == 1
    assert responses(db, prompt_id) == [("answered", "stand-in answer #1", openwebui.model, None)]
    assert rmq.depth("ai.dead") == 0 and rmq.depth(ready) == 0
    # another question under the same prompt_id is refused, not silently dropped
    other = submit(rmq, user, prompt_text(), prompt_id)
    assert dead_letters(rmq, "ai", 1)[other["client_generated_id"]]["x-dead-reason"] == "prompt_id_conflict"
    assert openwebui.calls == 1


def test_someone_elses_prompt_can_be_neither_taken_nor_read(ai_worker, openwebui, rmq, start_ingress, bearer):
    worker, db = ai_worker()
    port = start_ingress()
    owner, stranger, prompt_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    processed(db, submit(rmq, owner, prompt_text(), prompt_id))
    # the stranger reuses the prompt_id: dead-lettered as forbidden, no call, the owner's answer kept
    taken = submit(rmq, stranger, prompt_text(), prompt_id)
    assert dead_letters(rmq, "ai", 1)[taken["client_generated_id"]]["x-dead-reason"] == "forbidden"
    assert openwebui.calls == 1
    assert query(db, "SELECT user_id::text FROM prompts WHERE prompt_id = %s", (prompt_id,)) == [(owner,)]
    # and cannot read it; an unknown prompt is not found
    wait_for(lambda: answering_queries(worker), message="ai worker answering queries")
    status, body, _ = call(port, "GET", f"/api/v1/ai/prompts/{prompt_id}", bearer(stranger))
    assert (status, body["error"]) == (403, "forbidden")
    status, body, _ = call(port, "GET", f"/api/v1/ai/prompts/{uuid.uuid4()}", bearer(owner))
    assert (status, body["error"]) == (404, "not_found")
    status, body, _ = call(port, "GET", f"/api/v1/ai/prompts/{prompt_id}", bearer(owner))
    assert (status, body["status"]) == (200, "answered")


def test_a_misconfigured_endpoint_keeps_the_worker_from_starting(start_worker, make_database):
    worker = start_worker("ai", AI_DATABASE_URL=make_database("ai"), OPENWEBUI_URL="file:///etc/passwd",
                          OPENWEBUI_MODEL="m")
    wait_for(lambda: not worker.alive(), message="worker exits")
    assert worker.proc.returncode == 2
    assert any(l.get("msg") == "refusing to start" and "http://" in l.get("error", "") for l in worker.logs())
