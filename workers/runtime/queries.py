"""The query path (DESIGN §1): answers a caller is waiting for, off the worker's W.queries queue.

Queries (feed reads, passcode checks) must not wait behind a backlog of commands, and some
carry a passcode, which must never rest on disk or in a dead-letter queue. So they arrive
transient on a non-durable queue with a TTL (shared/topology.py), are answered through the
caller's `reply_to` and acked whatever happens: a query that fails is answered with an error,
never retried or dead-lettered. A caller that stopped waiting simply never reads the answer.

One thread with its own broker connection, database connection and publisher, beside the
consumer's: a slow batch of commands does not hold up a read, nor a read a batch.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import pika

from shared import broker, contracts, envelope, replies, strictjson, topology
from workers.runtime import db, outbox
from shared.backoff import Backoff
from shared.config import Config
from shared.errors import PermanentError
from workers.runtime.handler import Refused, Request, WorkerSpec
from shared.logging import log, write_lines
from workers.runtime.metrics import WorkerMetrics
from workers.runtime.processor import DEAD, DatabaseUnavailable, UnitOfWork
from workers.runtime.publisher import BatchPublisher

MAX_QUERY_BYTES = 16 * 1024
QUERY_PREFETCH = 4


class Unavailable(Exception):
    """The database cannot be reached right now: the caller is told 503, not kept waiting."""


class QueryServer:
    def __init__(self, spec: WorkerSpec, config: Config, db_url: str, metrics: WorkerMetrics | None = None):
        self.spec, self.config, self.db_url = spec, config, db_url
        self.metrics = metrics or WorkerMetrics(spec.name, spec.handlers, spec.queries)
        self.names = topology.QueueNames(spec.name)
        self.stopping = threading.Event()
        self.publisher = BatchPublisher(config.rabbitmq_url, f"worker-{spec.name}-queries-publisher",
                                        config.heartbeat_s)
        self.unit = UnitOfWork(spec, db_url, f"worker-{spec.name}-queries")
        self._thread: threading.Thread | None = None
        self._channel = None  # while consuming: what readiness looks at

    def start(self) -> "QueryServer":
        self._thread = threading.Thread(target=self._run, name="queries", daemon=True)
        self._thread.start()
        return self

    def consuming(self) -> bool:
        """Holding an open channel on the query queue (readiness, workers/runtime/health.py)."""
        channel = self._channel
        return channel is not None and channel.is_open

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.publisher.close()
        self.unit.close()

    # ---- broker loop ------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                self._consume(backoff)
            except broker.CONNECTION_ERRORS as exc:
                delay = backoff.next()
                log.warning("query consumer reconnecting", worker=self.spec.name,
                            error=f"{type(exc).__name__}: {exc}"[:200], retry_in_s=round(delay, 2))
                self.stopping.wait(delay)
            except Exception:
                log.exception("query consumer failed", worker=self.spec.name)
                self.stopping.wait(backoff.next())

    def _consume(self, backoff: Backoff) -> None:
        connection, node = broker.open_connection(self.config.rabbitmq_url, heartbeat_s=self.config.heartbeat_s,
                                                  client_name=f"worker-{self.spec.name}-queries")
        try:
            channel = connection.channel()
            topology.declare_queries(channel, self.spec.name, self.spec.queries.keys(), self.config.exchange)
            channel.basic_qos(prefetch_count=QUERY_PREFETCH)
            cancelled = []
            channel.add_on_cancel_callback(cancelled.append)
            channel.basic_consume(self.names.queries, self._on_message)
            self._channel = channel
            backoff.reset()
            log.info("answering queries", worker=self.spec.name, queue=self.names.queries,
                     queries=sorted(self.spec.queries), node=broker.address(node))
            while not self.stopping.is_set():
                connection.process_data_events(time_limit=0.5)
                if cancelled:  # W.queries is classic: in a cluster it is lost with its node
                    raise broker.ConsumerCancelled(f"the broker cancelled our consumer of {self.names.queries}")
        finally:
            self._channel = None
            if connection.is_open:
                try:
                    connection.close()
                except Exception as exc:  # closing a dying connection: nothing left to save
                    log.info("query connection closed uncleanly", worker=self.spec.name, error=type(exc).__name__)

    def _on_message(self, channel, method, properties, body) -> None:
        started = time.perf_counter()
        name = properties.type or method.routing_key
        request, error = None, None
        try:
            request = self._request(name, body)
            answer = replies.ok(self._answer(request))
        except Refusal as exc:
            error, answer = exc.error, replies.error(exc.error, exc.detail)
        except PermanentError as exc:  # a RateLimited carries its Retry-After
            error, answer = exc.reason, replies.refusal(exc)
        except Unavailable as exc:
            error, answer = "unavailable", replies.error("unavailable", "the database is unavailable")
            log.warning("query failed: database unavailable", worker=self.spec.name, query=name,
                        error=str(exc)[:200])
        except Exception as exc:  # our bug: the caller gets an answer now instead of a timeout
            error, answer = "internal_error", replies.error("internal_error", "internal error")
            log.error("query failed", worker=self.spec.name, query=name, error=type(exc).__name__)  # its text may hold a passcode
        if properties.reply_to:
            channel.basic_publish("", properties.reply_to, answer, pika.BasicProperties(
                content_type="application/json", correlation_id=properties.correlation_id, delivery_mode=1))
        channel.basic_ack(method.delivery_tag)
        self.metrics.count_query(name, error or "ok")
        # the parameters (a passcode, an access token) are never logged; the outcome is
        write_lines([("info", "query answered", {
            "worker": self.spec.name, "query": name, "user_id": request.user_id if request else None,
            "client_generated_id": request.event.id if request and request.event else None,
            "status": "error" if error else "ok", "error": error,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2)})])

    # ---- one query ----------------------------------------------------------------------
    def _request(self, name: str, body: bytes) -> Request:
        if name not in self.spec.queries:
            raise PermanentError(f"worker {self.spec.name} answers no query {name[:64]!r}", reason="unknown_query")
        if name in contracts.data_schemas():  # an event sent on the query path
            event = envelope.parse(body, MAX_QUERY_BYTES, self.config.max_clock_skew_s)
            if event.event_type != name:
                raise PermanentError(f"a {event.event_type} event sent as query {name}", reason="invalid")
            return Request(name, event.user_id, event.data, event)
        parsed = strictjson.loads(body, MAX_QUERY_BYTES)
        contracts.validate_query(name, parsed)
        return Request(name, parsed["user_id"].lower(), parsed["params"])

    def _answer(self, request: Request) -> dict:
        def handle(ctx, _claimed, verdicts):
            if verdicts and verdicts[0].outcome == DEAD:  # the id reused with another payload
                raise verdicts[0].error
            return self.spec.queries[request.name](ctx, replace(request, duplicate=bool(verdicts)))

        try:  # an event sent as a query has its key claimed like any other event
            *_, result, written = self.unit.run([(None, request.event)] if request.event else [], handle)
        except DatabaseUnavailable as exc:
            raise Unavailable(str(exc)) from exc
        except Exception as exc:
            if db.is_transient(exc):  # the caller is waiting: tell them now rather than retry
                raise Unavailable(str(exc).strip()) from exc
            raise
        if written:
            try:
                outbox.publish_written(self.unit.connection(), self.publisher, self.config.exchange, written,
                                       self.spec.name)
            except Exception as exc:  # committed: the consumer's relay publishes them
                log.warning("outbox publish failed, relay will retry", worker=self.spec.name,
                            events=len(written), error=f"{type(exc).__name__}: {exc}"[:200])
        if isinstance(result, Refused):
            raise Refusal(result.error, result.detail)
        return result


class Refusal(Exception):
    """A handler's committed Refused, on its way to the caller."""

    def __init__(self, error: str, detail: str):
        super().__init__(detail)
        self.error, self.detail = error, detail
