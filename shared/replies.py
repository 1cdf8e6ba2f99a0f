"""The one answer format of request–reply (DESIGN §1), on both paths: what a worker sends to the
caller's `reply_to` (a query off W.queries, or an event sent with `reply_to` on the durable
queue), and how the ingress reads it.

    {"status": "ok", "result": {...}}
    {"status": "duplicate"}                         the event was applied before; no new answer
    {"status": "error", "error": reason, "detail": text, "field": name|null, "retry_after_s": n|null}
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

from shared.errors import PermanentError, RateLimited, public_detail

OK, DUPLICATE, ERROR = "ok", "duplicate", "error"
MAX_DETAIL = 300


@dataclass(frozen=True)
class Reply:
    status: str
    result: dict | None = None
    error: str | None = None
    detail: str = ""
    field: str | None = None
    retry_after_s: int | None = None


def ok(result: dict | None) -> bytes:
    return orjson.dumps({"status": OK, "result": result or {}}, default=str)


def duplicate() -> bytes:
    return orjson.dumps({"status": DUPLICATE})


def error(reason: str, detail: str, field: str | None = None, retry_after_s: int | None = None) -> bytes:
    return orjson.dumps({"status": ERROR, "error": reason, "detail": (detail or reason)[:MAX_DETAIL],
                         "field": field, "retry_after_s": retry_after_s})


def refusal(exc: BaseException, reason: str | None = None, detail: str | None = None) -> bytes:
    """A failure's answer: the reason and the detail its sender may read (errors.public_detail)."""
    reason = reason or getattr(exc, "reason", None) or "internal_error"
    retry_after = exc.retry_after_s if isinstance(exc, RateLimited) else None
    field = getattr(exc, "field", None) if isinstance(exc, PermanentError) else None
    return error(reason, detail or public_detail(exc, reason), field, retry_after)


def decode(body: bytes) -> Reply:
    """A worker's answer; ValueError when it is not one (the caller treats it as no answer)."""
    answer = orjson.loads(body)
    if not isinstance(answer, dict) or answer.get("status") not in (OK, DUPLICATE, ERROR):
        raise ValueError("not a reply")
    result = answer.get("result")
    retry_after = answer.get("retry_after_s")
    return Reply(answer["status"], result if isinstance(result, dict) else None,
                 str(answer.get("error") or "rejected") if answer["status"] == ERROR else None,
                 str(answer.get("detail") or ""), answer.get("field"),
                 int(retry_after) if isinstance(retry_after, (int, float)) and retry_after > 0 else None)
