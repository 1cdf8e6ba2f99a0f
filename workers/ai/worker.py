"""AI worker: a user's prompt goes to an OpenWebUI model (workers/ai/openwebui.py) and the answer is
stored and announced (`ai.response.ready`). With no endpoint configured the prompt is stored as
failed (`ai.response.failed {reason: not_configured}`): never a made-up answer.

The chat call runs inside the transaction that claimed the event's idempotency key, so a
duplicate event costs no second call, and a call that fails leaves nothing behind: the runtime
retries it (5xx, 429, timeouts) or dead-letters it (other refusals). Prompt texts and the API key
never reach a log line.
"""
from __future__ import annotations

import time
import uuid

from shared.envelope import Envelope, rfc3339
from shared.errors import Forbidden, NotFound, PermanentError
from workers.runtime.handler import Context, Request, WorkerSpec
from shared.logging import log
from workers.ai import openwebui

NOT_CONFIGURED = "not_configured"

# The new row's key lock holds off a second submission of this prompt_id (another event, another
# replica) until we commit, so one prompt never costs two calls.
CLAIM_PROMPT = """
INSERT INTO prompts (prompt_id, user_id, prompt) VALUES (%s, %s, %s)
ON CONFLICT (prompt_id) DO NOTHING RETURNING prompt_id
"""
STORED_PROMPT = "SELECT user_id::text, prompt FROM prompts WHERE prompt_id = %s"
RECORD_ANSWER = """
INSERT INTO responses (prompt_id, status, answer, model, finish_reason) VALUES (%s, 'answered', %s, %s, %s)
"""
RECORD_FAILURE = "INSERT INTO responses (prompt_id, status, failure_reason) VALUES (%s, 'failed', %s)"
READ_PROMPT = """
SELECT p.user_id::text, p.created_at, r.status, r.answer, r.model, r.finish_reason, r.failure_reason,
       r.responded_at
FROM prompts p JOIN responses r USING (prompt_id)
WHERE p.prompt_id = %s
"""


def submit_prompt(ctx: Context, event: Envelope) -> None:
    prompt_id, prompt = str(uuid.UUID(event.data["prompt_id"])), event.data["prompt"]
    cur = ctx.cursor
    cur.execute(CLAIM_PROMPT, (prompt_id, event.user_id, prompt))
    if cur.fetchone() is None:
        _check_resubmission(cur, prompt_id, event.user_id, prompt)
        return  # the same prompt sent again under a new event id: its outcome stands
    client = openwebui.client()
    if client is None:
        ctx.cursor.execute(RECORD_FAILURE, (prompt_id, NOT_CONFIGURED))
        ctx.emit("ai.response.failed", {"prompt_id": prompt_id, "reason": NOT_CONFIGURED}, cause=event)
        return
    started = time.perf_counter()
    completion = client.complete(prompt)
    log.info("ai answered", worker="ai", prompt_id=prompt_id, model=completion.model,
             finish_reason=completion.finish_reason, answer_chars=len(completion.answer),
             call_ms=round((time.perf_counter() - started) * 1000, 1), client_generated_id=event.id,
             user_id=event.user_id)
    ctx.cursor.execute(RECORD_ANSWER, (prompt_id, completion.answer, completion.model, completion.finish_reason))
    ready = {"prompt_id": prompt_id, "answer": completion.answer, "model": completion.model}
    if completion.finish_reason:
        ready["finish_reason"] = completion.finish_reason
    ctx.emit("ai.response.ready", ready, cause=event)


def _check_resubmission(cur, prompt_id: str, user_id: str, prompt: str) -> None:
    cur.execute(STORED_PROMPT, (prompt_id,))
    owner, stored = cur.fetchone()
    if owner != user_id:
        raise Forbidden(f"prompt {prompt_id} belongs to another user")
    if stored != prompt:
        raise PermanentError(f"prompt {prompt_id} was already submitted with another text; use a new prompt_id",
                             reason="prompt_id_conflict")


def read_prompt(ctx: Context, request: Request) -> dict:
    prompt_id = str(uuid.UUID(request.params["prompt_id"]))
    cur = ctx.cursor
    cur.execute(READ_PROMPT, (prompt_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"prompt {prompt_id} is unknown or still waiting for its answer")
    owner, created_at, status, answer, model, finish_reason, failure_reason, responded_at = row
    if owner != request.user_id:
        raise Forbidden(f"prompt {prompt_id} belongs to another user")
    result = {"prompt_id": prompt_id, "status": status, "created_at": rfc3339(created_at)}
    if status == "answered":
        result.update(answer=answer, model=model, answered_at=rfc3339(responded_at))
        if finish_reason:
            result["finish_reason"] = finish_reason
    else:
        result["reason"] = failure_reason
    return result


def check_config() -> None:
    """At start: refuse an endpoint we cannot call (NotConfigured is a RuntimeError); say so when there is none."""
    client = openwebui.client()
    if client is None:
        log.warning("OPENWEBUI_URL is not set: every prompt fails as not_configured", worker="ai")
    else:
        config = client.config
        log.info("ai endpoint", worker="ai", host=client.host, model=config.model, chat_path=config.chat_path,
                 timeout_s=config.timeout_s, api_key_set=config.api_key is not None)


HANDLERS = {
    "ai.prompt.submitted": submit_prompt,
}

QUERIES = {
    "ai.prompt.get": read_prompt,
}

# One prompt per transaction: the chat call runs inside it, and in a batch one slow call would
# hold every other prompt's commit, and one failing call would replay (and so re-call) them all.
# A small prefetch leaves the backlog on the queue for other replicas rather than waiting here.
WORKER = WorkerSpec(name="ai", database="ai", handlers=HANDLERS, queries=QUERIES, startup=check_config,
                    prefetch=2, max_batch=1, description="prompts answered by an OpenWebUI model")
