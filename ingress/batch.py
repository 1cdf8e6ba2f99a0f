"""A request's events: strict JSON, one event or an array, validated all-or-nothing."""
from __future__ import annotations

from shared import contracts, envelope, strictjson
from shared.envelope import Envelope
from shared.errors import InvalidEvent, UnknownEventType, UnsupportedVersion

CLIENT_EVENT_TYPES = contracts.client_event_types()


class Rejected(Exception):
    """The request is refused as a whole (an HTTP error answer); nothing of it is published."""

    def __init__(self, status: int, error: str, detail: str, field: str | None = None,
                 errors: list[dict] | None = None, headers: tuple = ()):
        super().__init__(detail)
        self.status, self.error, self.detail, self.field, self.errors = status, error, detail, field, errors
        self.headers = headers

    def body(self) -> dict:
        out = {"error": self.error, "detail": self.detail}
        if self.field:
            out["field"] = self.field
        if self.errors is not None:
            out["errors"] = self.errors
        return out


class _Refused(Exception):
    def __init__(self, status: int, error: str, detail: str, field: str | None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.field = status, error, detail, field


def check_event(event, subject: str, max_clock_skew_s: int) -> Envelope:
    """One event → Envelope, or _Refused with the status and code the client gets."""
    event_type = event.get("event_type") if isinstance(event, dict) else None
    if (isinstance(event_type, str) and event_type not in CLIENT_EVENT_TYPES
            and event_type in contracts.data_schemas()):
        raise _Refused(422, "event_type_not_allowed",
                       f"{event_type} is an outcome event: only workers publish it", "event_type")
    try:
        env = envelope.from_dict(event, max_clock_skew_s)
    except UnsupportedVersion as exc:
        raise _Refused(422, "unsupported_version", exc.detail, exc.field) from None
    except UnknownEventType as exc:
        raise _Refused(422, "unknown_event_type", exc.detail, exc.field) from None
    except InvalidEvent as exc:
        raise _Refused(422, "schema_violation", exc.detail, exc.field) from None
    if env.user_id != subject:
        raise _Refused(403, "forbidden", "user_id is not the token's subject", "user_id")
    return env


def parse(body: bytes, subject: str, max_events: int, max_clock_skew_s: int) -> list[Envelope]:
    """The request body → validated envelopes, or Rejected listing every bad event by index."""
    try:
        value = strictjson.loads(body)
    except InvalidEvent as exc:
        raise Rejected(400, "bad_json", exc.detail, exc.field) from None
    single = isinstance(value, dict)
    events = [value] if single else value
    if not isinstance(events, list) or not events:
        raise Rejected(422, "schema_violation",
                       f"the body must be one event object or an array of 1 to {max_events} events", "body")
    if len(events) > max_events:
        raise Rejected(413, "too_many_events", f"{len(events)} events in one request; at most {max_events}")
    envelopes, errors, seen = [], [], set()
    for index, event in enumerate(events):
        try:
            env = check_event(event, subject, max_clock_skew_s)
            if env.client_generated_id in seen:
                # the second copy would be dropped by the worker's dedup: almost surely a client bug
                raise _Refused(422, "duplicate_id", "client_generated_id repeats an earlier event of "
                               "this request", "client_generated_id")
            seen.add(env.client_generated_id)
            envelopes.append(env)
        except _Refused as exc:
            errors.append((exc, {"index": index, "error": exc.error, "detail": exc.detail, "field": exc.field}))
    if not errors:
        return envelopes
    # Someone else's user id is a 403 whatever else is wrong; otherwise the first error speaks.
    status = 403 if any(exc.status == 403 for exc, _ in errors) else 422
    first = next(exc for exc, _ in errors if exc.status == status)
    if single:
        raise Rejected(status, first.error, first.detail, first.field)
    raise Rejected(status, first.error,
                   f"{len(errors)} of {len(events)} events rejected; none was published",
                   errors=[e for _, e in errors])
