"""What can go wrong with a message, and what the runtime does about it."""
from __future__ import annotations


class PermanentError(Exception):
    """Retrying cannot help: the message goes to the dead-letter queue at once.

    `http_status` is what the ingress answers when a caller waits for the outcome (request–reply,
    queries): 422 unless the error says otherwise (http_status below)."""

    reason = "permanent"
    http_status = 422

    def __init__(self, detail: str, reason: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if reason:
            self.reason = reason


class InvalidEvent(PermanentError):
    """Bad JSON, a broken envelope or data that violates the event's schema."""

    reason = "invalid"

    def __init__(self, detail: str, field: str | None = None, reason: str | None = None):
        super().__init__(detail, reason)
        self.field = field


class UnsupportedVersion(InvalidEvent):
    """The envelope's schema_version has a major this code does not know."""

    reason = "unsupported_version"


class UnknownEventType(InvalidEvent):
    """No schema, or no handler in this worker, for the event type."""

    reason = "unknown_event_type"


class Forbidden(PermanentError):
    """The user may not do this (someone else's resource)."""

    reason = "forbidden"
    http_status = 403


class NotFound(PermanentError):
    """The event refers to something that does not exist."""

    reason = "not_found"
    http_status = 404


class IdempotencyConflict(PermanentError):
    """The same client_generated_id came with another user or another payload."""

    reason = "idempotency_conflict"
    http_status = 409


class TransientError(Exception):
    """Might work later (a dependency timed out, a lock was busy): retry with growing delay."""

    reason = "transient"


class NotYet(TransientError):
    """What the event refers to is not there yet: its create may still be on another replica.
    Retried with the usual delays; when they run out, dead-lettered as not_found."""

    reason = "not_yet"
    exhausted_reason = "not_found"


class Unauthorized(PermanentError):
    """A credential (a feed access token) is missing its signature, expired or no longer valid."""

    reason = "unauthorized"
    http_status = 401


class RateLimited(PermanentError):
    """Too many attempts: try again after `retry_after_s`."""

    reason = "rate_limited"
    http_status = 429

    def __init__(self, detail: str, retry_after_s: int):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


# Reasons a worker answers with that no class above names (a handler's Refused, a reason=…).
_HTTP_STATUS_OF_REASON = {
    "access_denied": 403, "already_uploaded": 409,
    "unavailable": 503, "unknown_query": 503, "internal_error": 502,
}


def http_status(reason: str | None, invalid_status: int = 422) -> int:
    """The HTTP status for a worker's refusal reason. `invalid_status`: what a schema violation
    is on this route (422 for a posted event, 400 for a query string)."""
    if reason == InvalidEvent.reason:
        return invalid_status
    for cls in _ERROR_CLASSES:
        if cls.reason == reason:
            return cls.http_status
    return _HTTP_STATUS_OF_REASON.get(reason or "", PermanentError.http_status)


def safe_message(exc: BaseException) -> str:
    """An exception's message for logs and dead-letter headers, without what must not leak.

    PostgreSQL's DETAIL ("Failing row contains (…)") quotes the row, so a message body or a
    prompt would reach logs and headers: only the primary message line is kept."""
    text = str(exc)
    if type(exc).__module__.startswith("psycopg2"):
        text = text.strip().split("\n", 1)[0]
    return text


# What the sender reads when the refusal is not one of ours (a database error quotes tables and
# constraints, a library's message its internals): one sentence per dead-letter reason.
_GENERIC_DETAIL = {
    "rejected_by_database": "the event's data could not be stored: it breaks a rule of the data; "
                            "fix the event and send it under a new client_generated_id",
    "retries_exhausted": "the event could not be processed: a service it needs kept failing",
}
MAX_DETAIL = 500


def public_detail(exc: BaseException | None, reason: str) -> str:
    """Why an event was refused, for its sender (x-dead-detail, receipts, event.rejected, a
    request–reply error): the text of our own refusals (PermanentError, and NotYet's "not there"),
    written for people; for anything else a generic sentence, never SQL, a trace or a library's
    internals. x-last-error keeps the exception itself for operators."""
    if isinstance(exc, (PermanentError, NotYet)):
        text = safe_message(exc)
    else:
        text = _GENERIC_DETAIL.get(reason, "the event could not be processed")
    return text.replace("\x00", "").strip()[:MAX_DETAIL] or reason


def describe(exc: BaseException) -> str:
    """`Type: message`, as safe_message."""
    return f"{type(exc).__name__}: {safe_message(exc)}"


_ERROR_CLASSES = (Forbidden, NotFound, IdempotencyConflict, Unauthorized, RateLimited)
