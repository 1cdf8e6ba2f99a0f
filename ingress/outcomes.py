"""What became of the events a user sent (receipts), and the outcomes pushed to them (inbox).

Both are answered by workers over the query path; the ingress keeps no state but the greenlets
of long polls, each waiting on an Event that `inbox.updated` (from the notify worker) sets.
"""
from __future__ import annotations

import re
import time
import uuid
from contextlib import contextmanager
from urllib.parse import parse_qs

import gevent
import orjson
from gevent.event import Event

from ingress.batch import CLIENT_EVENT_TYPES, Rejected
from shared import contracts, strictjson
from shared.errors import InvalidEvent

INBOX_MAX_WAIT_S, INBOX_DEFAULT_LIMIT, INBOX_MAX_LIMIT = 25, 50, 100
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,200}")


# ---- receipts ---------------------------------------------------------------------------------

def consumer_of(event_type: str) -> str:
    """The worker that consumes a client event type (its schema's x-consumer)."""
    consumer = contracts.data_schemas()[event_type]["x-consumer"]
    return consumer if isinstance(consumer, str) else next(c for c in consumer if c != "frontend")


def parse_receipt_request(body: bytes, max_items: int) -> list[tuple[str, str]]:
    """{"events": [{"client_generated_id", "event_type"}, …]} → [(id, event_type)], or 4xx."""
    try:
        value = strictjson.loads(body)
    except InvalidEvent as exc:
        raise Rejected(400, "bad_json", exc.detail, exc.field) from None
    events = value.get("events") if isinstance(value, dict) else None
    if not isinstance(events, list) or not events or set(value) != {"events"}:
        raise Rejected(422, "schema_violation", 'expected {"events": [{"client_generated_id", "event_type"}, …]}',
                       "events")
    if len(events) > max_items:
        raise Rejected(413, "too_many_events", f"at most {max_items} receipts per request")
    return [receipt_item(e, f"events[{i}]") for i, e in enumerate(events)]


def receipt_item(item, where: str = "") -> tuple[str, str]:
    """One {client_generated_id, event_type} → (canonical id, event type), or 422 naming the field."""
    def field(name: str) -> str:
        return f"{where}.{name}" if where else name
    if not isinstance(item, dict) or set(item) != {"client_generated_id", "event_type"}:
        raise Rejected(422, "schema_violation", "each item is {client_generated_id, event_type}", where or None)
    event_type = item["event_type"]
    if not isinstance(event_type, str) or event_type not in CLIENT_EVENT_TYPES:
        raise Rejected(422, "unknown_event_type", "not an event type a client sends", field("event_type"))
    try:
        event_id = str(uuid.UUID(item["client_generated_id"]))
    except (ValueError, TypeError, AttributeError):
        raise Rejected(422, "schema_violation", "client_generated_id is not a UUID",
                       field("client_generated_id")) from None
    return event_id, event_type


def receipts(ask, subject: str, items: list[tuple[str, str]]) -> list[dict]:
    """One receipt per item, in order: each consuming worker is asked once, all at the same time.

    A worker that does not answer (not running, busy past the timeout) leaves its events
    `pending`: true as far as this request can tell, and the app simply asks again later."""
    by_worker: dict[str, list[str]] = {}
    for event_id, event_type in items:
        by_worker.setdefault(consumer_of(event_type), []).append(event_id)

    def ask_worker(worker: str, ids: list[str]) -> list[dict]:
        body = orjson.dumps({"user_id": subject, "params": {"ids": sorted(set(ids))}})
        try:
            return ask(f"{worker}.receipts", body).get("receipts", [])
        except Rejected as exc:
            if exc.status >= 500:
                return []
            raise

    jobs = {w: gevent.spawn(ask_worker, w, ids) for w, ids in by_worker.items()}
    gevent.joinall(list(jobs.values()))
    known = {}
    for worker, job in jobs.items():
        if job.exception is not None:
            raise job.exception
        for r in job.value:
            known[(r["client_generated_id"], r["event_type"])] = r
    return [known.get((event_id, event_type)) or
            {"client_generated_id": event_id, "event_type": event_type, "status": "pending"}
            for event_id, event_type in items]


# ---- inbox ------------------------------------------------------------------------------------

def inbox_params(environ) -> tuple[dict, float]:
    """(the inbox.get query's params, seconds to wait) from ?after&limit&wait, or 400."""
    try:
        args = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=10)
    except ValueError:
        raise Rejected(400, "bad_request", "too many query parameters") from None
    params: dict = {"limit": _bounded(args, "limit", INBOX_DEFAULT_LIMIT, 1, INBOX_MAX_LIMIT)}
    after = (args.get("after") or [""])[-1]
    if after:
        if not _CURSOR.fullmatch(after):
            raise Rejected(400, "bad_request", "after is not a cursor this API gave out", "after")
        params["after"] = after
    return params, float(_bounded(args, "wait", 0, 0, INBOX_MAX_WAIT_S))


def _bounded(args: dict, name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if not raw:
        return default
    try:
        value = int(raw[-1])
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise Rejected(400, "bad_request", f"{name} must be an integer from {low} to {high}", name)
    return value


class InboxWaiters:
    """Long polls waiting for their user's next inbox item: a greenlet and an Event each, no
    thread, no connection. `wake` runs on the hub when `inbox.updated` arrives."""

    def __init__(self):
        self._waiting: dict[str, set[Event]] = {}

    @contextmanager
    def waiting(self, user: str):
        """Register before asking for the items, so an item committed meanwhile still wakes us."""
        event = Event()
        self._waiting.setdefault(user, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(user)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[user]

    def wake(self, body: bytes | None) -> None:
        if body is None:  # (re)connected: what was published meanwhile is lost; everyone looks again
            users = list(self._waiting)
        else:
            users = orjson.loads(body).get("data", {}).get("user_ids", [])
        for user in users:
            for event in self._waiting.get(user, ()):
                event.set()

    def __len__(self) -> int:
        return sum(len(e) for e in self._waiting.values())


def read_inbox(ask, waiters: InboxWaiters, subject: str, params: dict, wait_s: float) -> dict:
    """The items after the cursor; with wait_s, waits for the first one up to that long."""
    body = orjson.dumps({"user_id": subject, "params": params})
    with waiters.waiting(subject) as woken:
        answer = ask("inbox.get", body)
        deadline = time.monotonic() + wait_s
        while not answer.get("items") and wait_s:
            left = deadline - time.monotonic()
            if left <= 0 or not woken.wait(left):
                break
            woken.clear()
            answer = ask("inbox.get", body)
    return answer
