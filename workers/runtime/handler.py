"""What a domain worker hands the runtime: its handler table, and the context a handler gets."""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping

import orjson

from shared import contracts
from shared.config import Config
from shared.envelope import Envelope, new_event, outcome_id
from workers.runtime import outbox

# A handler may return a dict: the answer sent to a request–reply caller (DESIGN §1).
Handler = Callable[["Context", Envelope], "dict | None"]
# A query handler answers a caller who waits (workers/runtime/queries.py): a dict, or a Refused.
QueryHandler = Callable[["Context", "Request"], "dict | Refused"]


@dataclass(frozen=True)
class Request:
    """A query off W.queries: who asks, what, with which (schema-checked) parameters.

    Queries named after an event type (feed.access.attempt) carry that event: `event` is its
    validated envelope and `params` its data. The runtime claims that event's idempotency key
    before the handler runs; `duplicate` says it was already claimed (same payload)."""

    name: str
    user_id: str
    params: dict
    event: Envelope | None = None
    duplicate: bool = False  # its event's idempotency key was already claimed: sent again


@dataclass(frozen=True)
class Refused:
    """A refusal the handler wants committed with its writes (a denied passcode still counts
    against the attempt limit); raising a PermanentError instead rolls the writes back."""

    error: str
    detail: str


@dataclass(frozen=True)
class WorkerSpec:
    """One domain worker: its queue name, its database and its event type → handler table."""

    name: str
    database: str
    handlers: Mapping[str, Handler]
    description: str = ""
    queries: Mapping[str, QueryHandler] = field(default_factory=dict)  # answered off W.queries
    startup: Callable[[], None] | None = None  # checks keys and config; raises RuntimeError to refuse
    prefetch: int | None = None   # overrides PREFETCH (a transcode job takes one at a time)
    max_batch: int | None = None  # messages per transaction; default half the prefetch
    # single-row write → the same write for many rows, read from one JSON array (%s::jsonb, an
    # array of the single-row parameter tuples). Only for writes whose rows commute with each
    # other and with the batch's other writes (newest-wins upserts that also resolve duplicates
    # within the array): the runtime sends a round trip's rows as one statement (see Cursor).
    batched: Mapping[str, str] = field(default_factory=dict)
    # work of the worker's own beside consuming (the reminder scheduler): run(config, db_url,
    # stopping) on a thread the consumer starts; it returns once `stopping` is set, and /livez
    # fails if it ends before that (a crash: the pod restarts).
    background: Callable[[Config, str, threading.Event], None] | None = None


@lru_cache(maxsize=4096)
def _returns_nothing(sql: str) -> bool:
    """A write that returns no rows (INSERT/UPDATE/DELETE without RETURNING): nothing the handler
    can look at until the next read, so it may wait for that read's round trip. Anything else
    (a SELECT, a CTE, a lock) goes at once."""
    words = sql.split(None, 1)
    return bool(words) and words[0].upper() in ("INSERT", "UPDATE", "DELETE") and "RETURNING" not in sql.upper()


class Cursor:
    """The one way a handler talks to its database: a DB-API cursor whose writes wait.

    execute() of a write that returns no rows is rendered and buffered; the buffer travels, in
    order, in the round trip of the next statement that returns rows, or at commit. fetch*,
    rowcount and description send it first, so a handler sees what a plain cursor would (one
    difference: an error in a buffered write surfaces at that later call). Statements the
    worker declares in WorkerSpec.batched are sent as one multi-row statement per round trip, at
    the place of the first of them: their rows may move ahead of other buffered writes, which is
    why only writes whose outcome does not depend on that may be declared."""

    def __init__(self, conn, batched: Mapping[str, str] = {}):
        self._cur = conn.cursor()
        self._batched = batched
        self._pending: list = []  # rendered statements (bytes) and [many_sql, single_sql, rows] groups
        self._groups: dict[str, list] = {}  # many_sql → its group in _pending, until sent

    def execute(self, sql, params=None) -> None:
        many = self._batched.get(sql)
        if many is not None:  # declared commutative: its rows join the buffer's group at the first one's place
            group = self._groups.get(many)
            if group is None:
                group = self._groups[many] = [many, sql, []]
                self._pending.append(group)
            group[2].append(params)
        elif _returns_nothing(sql):
            self._pending.append(self._cur.mogrify(sql, params))
        else:
            self._send(self._cur.mogrify(sql, params))

    def defer(self, statement: bytes) -> None:
        """A rendered statement of the runtime's own (timeouts, outbox rows), sent with the rest."""
        self._pending.append(statement)

    def flush(self) -> None:
        self._send(None)

    def _send(self, last: bytes | None) -> None:
        parts = [p if isinstance(p, bytes) else self._render(*p) for p in self._pending]
        self._pending, self._groups = [], {}
        if last is not None:
            parts.append(last)
        if parts:  # one round trip; the cursor holds the last statement's result
            self._cur.execute(b";".join(parts))

    def _render(self, many: str, single: str, rows: list) -> bytes:
        try:  # orjson serializes a batch in microseconds where psycopg2 quotes every value in Python
            return self._cur.mogrify(many, (orjson.dumps(rows).decode(),))
        except TypeError:  # a value JSON cannot carry (bytes, Decimal): one statement per row
            return b";".join(self._cur.mogrify(single, row) for row in rows)

    def fetchone(self):
        self.flush()
        return self._cur.fetchone()

    def fetchall(self):
        self.flush()
        return self._cur.fetchall()

    def fetchmany(self, size=None):
        self.flush()
        return self._cur.fetchmany(size) if size is not None else self._cur.fetchmany()

    def __iter__(self):
        self.flush()
        return iter(self._cur)

    @property
    def rowcount(self) -> int:
        self.flush()
        return self._cur.rowcount  # the last statement's: a batched group counts all its rows

    @property
    def description(self):
        self.flush()
        return self._cur.description

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass  # the runtime owns the cursor: it outlives a handler's `with`


@dataclass
class Context:
    """A handler's view of the transaction it runs in: `cursor` reads and writes (see Cursor),
    `emit()` adds an outbox row in the same transaction. The runtime claims idempotency keys,
    flushes and commits."""

    conn: object
    worker: str
    cursor: Cursor
    _unsent_outbox: list[Envelope] = field(default_factory=list)
    _gathered: dict = field(default_factory=dict)  # (event_type, key) → (first cause, chunk, values)
    outbox: list[Envelope] = field(default_factory=list)  # written to the outbox table

    def emit(self, event_type: str, data: dict, cause: Envelope, user_id: str | None = None) -> Envelope:
        """Queue an outcome event; its id derives from the cause (its id and its sender: ids are
        unique per sender) so a replay emits the same id."""
        event = new_event(event_type, user_id or cause.user_id, data, self.worker,
                          outcome_id(cause.client_generated_id, f"{event_type}/{cause.user_id}"))
        contracts.validate(event.to_dict())  # our own bug, caught before it reaches anyone
        self._unsent_outbox.append(event)
        return event

    def emit_gathered(self, event_type: str, key: str, values, cause: Envelope, chunk: int = 1000) -> None:
        """Gather `values` into one outcome event `{key: [sorted values]}` per transaction (per
        batch on the fast path) instead of one per message: a wake-up naming every user a batch
        touched. Emitted at flush, in events of at most `chunk` values; each id derives from the
        first cause and the values, so a replay of the same batch emits the same ids."""
        _, _, gathered = self._gathered.setdefault((event_type, key), (cause, chunk, set()))
        gathered.update(values)

    def _emit_gathered(self) -> None:
        gathered, self._gathered = self._gathered, {}
        for (event_type, key), (cause, chunk, values) in gathered.items():
            ordered = sorted(values)
            for start in range(0, len(ordered), chunk):
                part = ordered[start:start + chunk]
                digest = hashlib.sha256("\n".join(part).encode()).hexdigest()[:32]
                event = new_event(event_type, cause.user_id, {key: part}, self.worker,
                                  outcome_id(cause.client_generated_id, f"{event_type}/{cause.user_id}/{digest}"))
                contracts.validate(event.to_dict())
                self._unsent_outbox.append(event)

    def flush(self) -> None:
        """Send buffered writes and pending outbox rows in one round trip."""
        if self._gathered:
            self._emit_gathered()
        if self._unsent_outbox:
            events, self._unsent_outbox = self._unsent_outbox, []
            self.cursor.execute(outbox.INSERT_ROWS, (outbox.rows(events),))  # no rows back: rides with the buffer
            self.outbox.extend(events)
        self.cursor.flush()
