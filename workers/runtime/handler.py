"""What a domain worker hands the runtime: its handler table, and the context a handler gets."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Mapping

from shared import contracts
from workers.runtime import db
from shared.envelope import Envelope, new_event, outcome_id

# A handler may return a dict: the answer sent to a request–reply caller (DESIGN §1).
Handler = Callable[["Context", Envelope], "dict | None"]
# A query handler answers a caller who waits (workers/runtime/queries.py): a dict, or a Refused.
QueryHandler = Callable[["Context", "Request"], "dict | Refused"]


@dataclass(frozen=True)
class Request:
    """A query off W.queries: who asks, what, with which (schema-checked) parameters.

    Queries named after an event type (feed.access.attempt) carry that event: `event` is its
    validated envelope and `params` its data."""

    name: str
    user_id: str
    params: dict
    event: Envelope | None = None


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


@dataclass(frozen=True)
class Prepared:
    """A statement prepared once per connection: each use sends only `EXECUTE name(values)`,
    which is cheaper to build here and to parse and plan in PostgreSQL."""

    name: str
    params: tuple[str, ...]  # PostgreSQL types of $1..$n
    sql: str

    @property
    def prepare(self) -> str:
        return f"PREPARE {self.name} ({', '.join(self.params)}) AS {self.sql}"

    @property
    def execute(self) -> str:
        return f"EXECUTE {self.name} ({', '.join(['%s'] * len(self.params))})"


@dataclass(frozen=True)
class Rows:
    """A multi-row statement (`… VALUES %s …`): the rows a batch adds are sent as one statement
    at flush. Only for statements whose rows commute, such as newest-wins upserts that also
    resolve duplicates within the batch (DISTINCT ON … ORDER BY version DESC)."""

    sql: str
    template: str | None = None


@dataclass
class Context:
    """A handler's view of the transaction it runs in.

    `write()` defers a statement so a batch's writes travel in one round trip; `cur` gives an
    immediate cursor for handlers that must read before they write (it first flushes deferred
    writes, so reads see them). `emit()` adds an outbox row in the same transaction.
    """

    conn: object
    worker: str
    prepared: set = field(default_factory=set)  # statement names prepared on this connection
    _writes: list[bytes] = field(default_factory=list)
    _mogrifier: object = None
    _rows: dict = field(default_factory=dict)  # Rows → list of row tuples
    _unsent_outbox: list[Envelope] = field(default_factory=list)
    _gathered: dict = field(default_factory=dict)  # (event_type, key) → (first cause, chunk, values)
    outbox: list[Envelope] = field(default_factory=list)  # written to the outbox table

    @property
    def cur(self):
        self.flush()
        return self.conn.cursor()

    def write(self, statement: "str | Prepared", params=None) -> None:
        if self._mogrifier is None:  # one cursor for the batch: this runs once per message
            self._mogrifier = self.conn.cursor()
        if isinstance(statement, Prepared):
            if statement.name not in self.prepared:
                self._mogrifier.execute(statement.prepare)  # session-level: survives our transactions
                self.prepared.add(statement.name)
            statement = statement.execute
        self._writes.append(self._mogrifier.mogrify(statement, params))

    def write_row(self, statement: Rows, row: tuple) -> None:
        self._rows.setdefault(statement, []).append(row)

    def claim(self, event: Envelope) -> bool:
        """The idempotency key, for handlers on the query path (the batch path claims its own):
        True the first time, False for a duplicate; IdempotencyConflict otherwise."""
        from workers.runtime.processor import DEAD, claim_keys  # the processor builds on this module
        self.flush()
        claimed, verdicts = claim_keys(self.conn, self.worker, [(None, event)])
        if verdicts and verdicts[0].outcome == DEAD:
            raise verdicts[0].error
        return bool(claimed)

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
        """Send deferred writes and pending outbox rows in as few round trips as possible."""
        if self._gathered:
            self._emit_gathered()
        if self._writes:
            statements, self._writes = self._writes, []
            with self.conn.cursor() as cur:
                cur.execute(b";".join(statements))
        if self._rows:
            groups, self._rows = self._rows, {}
            with self.conn.cursor() as cur:
                for statement, rows in groups.items():
                    db.execute_rows(cur, statement.sql, statement.template, rows)
        if self._unsent_outbox:
            events, self._unsent_outbox = self._unsent_outbox, []
            with self.conn.cursor() as cur:
                db.execute_rows(cur, "INSERT INTO outbox (id, event_type, body) VALUES %s ON CONFLICT (id) DO NOTHING",
                                "(%s::uuid, %s, convert_to(%s, 'UTF8'))",
                                [(e.id, e.event_type, e.to_json().decode()) for e in events])
            self.outbox.extend(events)
