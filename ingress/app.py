"""The ingress (DESIGN §1): a plain WSGI app; events are answered 202 only once the broker confirmed them.

Run it under gunicorn: see ingress/gunicorn_conf.py.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
import traceback
import uuid
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs

import orjson
import pika

from ingress import batch, cors, documents, metrics, outcomes, reads
from shared import frames
from ingress.ratelimit import UserRateLimiter
from ingress.auth import BearerRefused, BearerVerifier
from ingress.batch import Rejected
from ingress.publisher import REPLY_TO, UNROUTABLE, BrokerUnavailable, Nacked, PublishError, Publisher, PublishTimeout
from shared import broker, contracts, errors, process, replies
from shared.config import Config
from shared.envelope import new_event
from shared.errors import InvalidEvent
from shared.logging import DeferredLines, log, setup_logging
from shared.topology import QUERY_EXCHANGE

RETRY_AFTER_S = 2
# Events whose worker answers at once (DESIGN §1): the client gets the answer in its response.
REPLY_EVENT_TYPES = contracts.reply_event_types()
# Events that travel only on the query path (they carry a passcode): answered, or 504.
QUERY_EVENT_TYPES = contracts.request_reply_event_types()
_VIDEO_COMPLETE = re.compile(r"^/api/v1/videos/([0-9a-fA-F-]{36})/complete$")
_EVENT_RECEIPT = re.compile(r"^/api/v1/events/([0-9a-fA-F-]{36})$")
SCHEMA_PREFIX = f"{documents.PREFIX}/schemas/"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_JSON = ("Content-Type", "application/json")
CLIENT_MODULE = Path(__file__).parent / "client" / "spotter.js"
# An hour in caches, then revalidated by ETag: a deploy reaches browsers within the hour, and the
# path's /api/v1 keeps a cached client speaking the API it was written for.
CLIENT_CACHE_CONTROL = "public, max-age=3600"
_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
# one line per request, written a fraction of a second later with its neighbours (not loguru:
# its per-call machinery would cost more than the request's own work)
REQUEST_LOG = DeferredLines(interval_s=0.2)


class App:
    """Routes, checks and publishing; one per process, with that process's publisher."""

    def __init__(self, config: Config):
        self.config = config
        self.verifier = BearerVerifier(config.jwt)  # fails at start, not per request, when no key is set
        self.limiter = UserRateLimiter(config.rate_limit_burst, config.rate_limit_events_per_s)
        self.inbox_waiters = outcomes.InboxWaiters()
        self.cors = cors.Cors(config.cors_allowed_origins)  # ValueError at start for a malformed entry
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()
        self._schemas = {t: orjson.dumps(contracts.event_schema(t)) for t in contracts.data_schemas()}
        for event_type in batch.CLIENT_EVENT_TYPES:
            _compile_validator(event_type)
        self._documents = {
            f"{documents.PREFIX}/schemas": orjson.dumps(documents.schema_index()),
            f"{documents.PREFIX}/openapi.json": orjson.dumps(documents.openapi(config.max_batch_events)),
            f"{documents.PREFIX}/asyncapi.json": orjson.dumps(documents.asyncapi(config.exchange)),
        }
        self._client_module = CLIENT_MODULE.read_bytes()
        self._client_etag = f'"{hashlib.sha256(self._client_module).hexdigest()[:32]}"'
        self._routes = {
            documents.EVENTS_PATH: {"POST": self.post_events},
            documents.CLIENT_PATH: {"GET": self.client_module},
            documents.RECEIPTS_PATH: {"POST": self.post_receipts},
            documents.INBOX_PATH: {"GET": self.read_inbox},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
            "/metrics": {"GET": self.scrape},
            **{path: {"GET": self.document} for path in self._documents},
        }

    # ---- lifecycle ----------------------------------------------------------------------
    def publisher(self) -> Publisher:
        """This process's publisher, started on first use: a connection must not cross a fork."""
        publisher = self._publisher
        if publisher is None or publisher.pid != process.pid():
            with self._lock:
                publisher = self._publisher
                if publisher is None or publisher.pid != process.pid():
                    publisher = self._publisher = Publisher(
                        self.config.rabbitmq_url, name=f"ingress-{process.pid()}",
                        heartbeat_s=self.config.heartbeat_s,
                        declare_exchanges=((self.config.exchange, "topic"), (QUERY_EXCHANGE, "direct")),
                        subscribe=((self.config.exchange, "inbox.updated"),),
                        on_event=self.inbox_waiters.wake).start()
        return publisher

    def warm(self, timeout: float = 3.0) -> bool:
        """Connect before taking requests; not ready in time is fine (/readyz says so)."""
        return self.publisher().wait_ready(timeout)

    def close(self) -> None:
        if self._publisher is not None and self._publisher.pid == process.pid():
            self._publisher.close()
        REQUEST_LOG.flush()

    # ---- WSGI ---------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        started = time.perf_counter()
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        seen = {"user_id": None, "count": None}  # what the log line reports; filled by handlers
        route, label, error = path[:200], metrics.UNMATCHED, None
        try:
            matched, methods = self._match(path)
            if methods is None:
                raise Rejected(404, "not_found", f"no route {path[:100]}")
            route = label = matched
            handler = methods.get(method)
            if handler is not None:
                code, payload, headers = handler(environ, seen)
            elif method == "OPTIONS":  # CORS preflight: 204, or Rejected 403 for an origin not allowed
                code, payload = 204, b""
                headers = self.cors.preflight(
                    environ.get("HTTP_ORIGIN"), environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"),
                    environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"), methods,
                    documents.request_headers(matched))[1]
            else:
                raise Rejected(405, "method_not_allowed", f"{method} is not allowed here",
                               headers=(("Allow", ", ".join(methods)),))
        except Rejected as exc:
            code, payload, headers, error = exc.status, exc.body(), exc.headers, exc.error
        except Exception:
            log.exception("request failed", route=route)
            error = "internal_error"
            code, payload, headers = 500, {"error": error, "detail": "internal error"}, ()
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        if code == 204:  # a preflight: no body, so neither Content-Type nor Content-Length (RFC 9110 §8.6)
            start_response(_STATUS_LINES[code], list(headers))
        elif code == 304:  # the client module unchanged: validators only, no body
            start_response(_STATUS_LINES[code], [*headers, *self.cors.response_headers(environ.get("HTTP_ORIGIN"))])
            body = b""
        else:
            cors_headers = self.cors.response_headers(environ.get("HTTP_ORIGIN"))  # () unless an allowed origin
            if headers and headers[0][0] == "Content-Type":  # a handler's own (only /metrics has one)
                start_response(_STATUS_LINES[code], [headers[0], ("Content-Length", str(len(body))),
                                                     *headers[1:], *cors_headers])
            else:
                start_response(_STATUS_LINES[code], [_JSON, ("Content-Length", str(len(body))),
                                                     *headers, *cors_headers])
        metrics.count_request(label, method, code)
        REQUEST_LOG.write("info", "request", {"method": method, "route": route, "status": code, "error": error,
                                              "duration_ms": round((time.perf_counter() - started) * 1000, 2), **seen})
        return [body]

    def _match(self, path: str):
        """(route template, {method: handler}), or (None, None) when no route has this path."""
        methods = self._routes.get(path)  # the events route first: it takes nearly every request
        if methods is not None:
            return path, methods
        if path.startswith(SCHEMA_PREFIX):
            return f"{SCHEMA_PREFIX}{{event_type}}", {"GET": self.event_schema}
        if _VIDEO_COMPLETE.match(path):
            return "/api/v1/videos/{video_id}/complete", {"POST": self.complete_video}
        if _EVENT_RECEIPT.match(path):
            return documents.EVENT_RECEIPT_PATH, {"GET": self.event_receipt}
        read = reads.match(path)
        if read:
            return read.route, {"GET": self.read}
        return None, None

    # ---- handlers: (environ, seen) -> (status, payload, extra headers) ----------------
    def healthz(self, environ, seen):
        return 200, {"status": "ok"}, ()

    def readyz(self, environ, seen):
        if self.publisher().is_ready():
            return 200, {"status": "ready"}, ()
        return 503, {"status": "broker_unavailable"}, ()

    def scrape(self, environ, seen):
        """Prometheus text: every gunicorn worker process's counts together (ingress/metrics.py)."""
        body, content_type = metrics.exposition(environ.get("HTTP_ACCEPT"))
        return 200, body, (("Content-Type", content_type),)

    def document(self, environ, seen):
        return 200, self._documents[environ["PATH_INFO"]], ()

    def client_module(self, environ, seen):
        """The offline-first JavaScript client (ingress/client/spotter.js), for apps to import."""
        validators = (("ETag", self._client_etag), ("Cache-Control", CLIENT_CACHE_CONTROL))
        asked = {tag.strip().removeprefix("W/") for tag in (environ.get("HTTP_IF_NONE_MATCH") or "").split(",")}
        if self._client_etag in asked or "*" in asked:
            return 304, b"", validators
        return 200, self._client_module, (("Content-Type", "text/javascript; charset=utf-8"), *validators)

    def event_schema(self, environ, seen):
        event_type = environ["PATH_INFO"][len(SCHEMA_PREFIX):]
        if event_type not in self._schemas:
            raise Rejected(404, "not_found", f"unknown event type {event_type[:64]!r}")
        return 200, self._schemas[event_type], ()

    def _subject(self, environ, seen) -> str:
        try:
            subject = self.verifier.subject(environ.get("HTTP_AUTHORIZATION"))
        except BearerRefused as exc:
            raise Rejected(401, "unauthorized", str(exc),
                           headers=(("WWW-Authenticate", 'Bearer error="invalid_token"'),)) from None
        seen["user_id"] = subject
        return subject

    def _spend(self, subject: str, events: int) -> None:
        """429 when this user has used up their events for now; other users are not affected."""
        wait = self.limiter.take(subject, events)
        if wait:
            raise Rejected(429, "rate_limited", f"too many events from this user: retry in {wait}s",
                           headers=(("Retry-After", str(wait)),))

    def post_events(self, environ, seen):
        subject = self._subject(environ, seen)
        self._check_media_type(environ.get("CONTENT_TYPE", ""))
        envelopes = batch.parse(self._read_body(environ), subject, self.config.max_batch_events,
                                self.config.max_clock_skew_s)
        seen["count"] = len(envelopes)
        self._spend(subject, len(envelopes))
        asked = sorted({e.event_type for e in envelopes} & QUERY_EVENT_TYPES)
        if asked and len(envelopes) > 1:
            raise Rejected(422, "send_alone", f"{', '.join(asked)} must be posted on its own, not in a batch")
        if asked:
            return self._ask_event(envelopes[0], _trace_headers(environ))
        if len(envelopes) == 1 and envelopes[0].event_type in REPLY_EVENT_TYPES:
            return self._request_reply(envelopes[0], _trace_headers(environ))
        return self._publish(envelopes, _trace_headers(environ))

    def complete_video(self, environ, seen):
        """The upload finished: `media.uploaded` for the video worker to verify (object, size, type).

        The video worker first says whether the caller has this video at all (query path): a
        missing or someone else's video is a 404 now, not a message that dies in a dead-letter
        queue. The event's id is keyed with EVENT_ID_KEY: one id per video and caller, so a retried
        completion is deduplicated, and one no client can compute and claim first.
        """
        subject = self._subject(environ, seen)
        self._spend(subject, 1)
        video_id = str(uuid.UUID(_VIDEO_COMPLETE.match(environ["PATH_INFO"]).group(1)))
        headers = _trace_headers(environ)
        self._ask("video.upload.get", orjson.dumps({"user_id": subject, "params": {"video_id": video_id}}),
                  headers, invalid_status=400)
        event = new_event("media.uploaded", subject, {"video_id": video_id}, "ingress",
                          self._server_event_id("media.uploaded", video_id, subject))
        return self._publish([event], headers)

    def _server_event_id(self, *parts: str) -> uuid.UUID:
        digest = hmac.new(self.config.event_id_key, "/".join(parts).encode(), hashlib.sha256).digest()
        return uuid.UUID(bytes=digest[:16], version=4)

    def post_receipts(self, environ, seen):
        """What became of each event: applied, rejected (why) or pending, in the order asked."""
        subject = self._subject(environ, seen)
        self._check_media_type(environ.get("CONTENT_TYPE", ""))
        items = outcomes.parse_receipt_request(self._read_body(environ), self.config.max_batch_events)
        seen["count"] = len(items)
        self._spend(subject, max(1, len(items)))
        return 200, {"receipts": outcomes.receipts(self._ask_json, subject, items)}, ()

    def event_receipt(self, environ, seen):
        subject = self._subject(environ, seen)
        self._spend(subject, 1)
        event_id = _EVENT_RECEIPT.match(environ["PATH_INFO"]).group(1)
        event_type = (parse_qs(environ.get("QUERY_STRING", "")).get("event_type") or [None])[-1]
        try:
            item = outcomes.receipt_item({"client_generated_id": event_id, "event_type": event_type})
        except Rejected as exc:  # a query string or path, not a body: 400
            raise Rejected(400, "bad_request", exc.detail, exc.field) from None
        return 200, outcomes.receipts(self._ask_json, subject, [item])[0], ()

    def read_inbox(self, environ, seen):
        """The caller's outcome items after a cursor; ?wait=S holds the request until one comes."""
        subject = self._subject(environ, seen)
        self._spend(subject, 1)
        params, wait_s = outcomes.inbox_params(environ)
        return 200, outcomes.read_inbox(self._ask_json, self.inbox_waiters, subject, params, wait_s), ()

    def _ask_json(self, name: str, body: bytes) -> dict:
        return self._ask(name, body, None, invalid_status=400)

    def read(self, environ, seen):
        """A page the app shows, answered by the worker that owns the data (query path)."""
        subject = self._subject(environ, seen)
        self._spend(subject, 1)
        query = reads.query(environ, subject)
        return 200, self._ask(query.name, orjson.dumps(query.body), _trace_headers(environ), invalid_status=400), ()

    def _ask_event(self, event, headers):
        """An event whose answer is the response: 200 with it, or the worker's refusal."""
        result = self._ask(event.event_type, event.to_json(), headers)
        return 200, {"accepted": [event.id], "result": result}, ()

    def _ask(self, name: str, body: bytes, headers, invalid_status: int = 422) -> dict:
        """Publish a transient query that expires once we stop waiting; its answer, or 503/504."""
        correlation_id = str(uuid.uuid4())
        publisher = self.publisher()
        reply = publisher.expect_reply(correlation_id)
        props = pika.BasicProperties(content_type="application/json", delivery_mode=1, type=name,
                                     correlation_id=correlation_id, reply_to=REPLY_TO, headers=headers,
                                     expiration=str(int(self.config.query_timeout_s * 1000)))
        try:
            try:
                result, = publisher.confirm([(QUERY_EXCHANGE, name, body, props)], self.config.publish_timeout_s)
            except PublishError as exc:
                metrics.count_failures(_failure_reason(exc))
                raise Rejected(503, "broker_unavailable", str(exc),
                               headers=(("Retry-After", str(RETRY_AFTER_S)),)) from None
            except Exception as exc:
                raise _publish_bug(exc) from None
            if result == UNROUTABLE:
                metrics.count_failures("unroutable")
                raise Rejected(503, "no_worker", f"no worker answers {name} right now",
                               headers=(("Retry-After", str(RETRY_AFTER_S)),))
            try:
                answer = replies.decode(reply.result(self.config.query_timeout_s))
            except (TimeoutError, PublishError, ValueError):
                raise Rejected(504, "timeout", f"no answer within {self.config.query_timeout_s:g}s; try again") from None
        finally:
            publisher.forget_reply(correlation_id)
        if answer.status == replies.ERROR:
            raise _refused(answer, invalid_status)
        return answer.result or {}

    def _request_reply(self, event, headers):
        """Publish, then wait a bounded time for the worker's answer; 202 if it does not come."""
        correlation_id = event.id
        publisher = self.publisher()
        reply = publisher.expect_reply(correlation_id)
        props = broker.event_properties(event, headers)
        props.reply_to, props.correlation_id = REPLY_TO, correlation_id
        try:
            self._publish([event], headers, props)
            try:
                answer = replies.decode(reply.result(self.config.reply_timeout_s))
            except (TimeoutError, PublishError, ValueError):
                return 202, {"accepted": [event.id], "pending": True}, ()
        finally:
            publisher.forget_reply(correlation_id)
        if answer.status == replies.ERROR:
            raise _refused(answer)
        if answer.status == replies.DUPLICATE:
            return 202, {"accepted": [event.id], "duplicate": True}, ()
        return 200, {"accepted": [event.id], "result": answer.result or {}}, ()

    def _publish(self, envelopes, headers, props=None):
        messages = [(self.config.exchange, e.event_type, e.to_json(), props or frames.event_properties(e, headers))
                    for e in envelopes]
        try:
            results = self.publisher().confirm(messages, self.config.publish_timeout_s)
        except PublishError as exc:
            metrics.count_failures(_failure_reason(exc), len(messages))
            raise Rejected(503, "broker_unavailable", str(exc),
                           headers=(("Retry-After", str(RETRY_AFTER_S)),)) from None
        except Exception as exc:
            raise _publish_bug(exc) from None
        unroutable = sorted({e.event_type for e, r in zip(envelopes, results) if r == UNROUTABLE})
        if unroutable:
            delivered = sum(r != UNROUTABLE for r in results)
            metrics.count_failures("unroutable", len(results) - delivered)
            raise Rejected(422, "no_consumer", f"no queue takes {', '.join(unroutable)}"
                           + (f"; the other {delivered} event(s) were delivered, re-sending them is safe"
                              if delivered else ""))
        return 202, {"accepted": [e.id for e in envelopes]}, ()

    @staticmethod
    def _check_media_type(content_type: str) -> None:
        media, _, params = content_type.partition(";")
        charset = params.strip().lower()
        if media.strip().lower() != "application/json" or charset not in ("", "charset=utf-8", 'charset="utf-8"'):
            raise Rejected(415, "unsupported_media_type", "Content-Type must be application/json")

    def _read_body(self, environ) -> bytes:
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            # A client that stops sending its body would hold this greenlet and its connection
            # for good. gevent arms the timer only when a read has to wait: free for the usual
            # body that came with the headers.
            sock.settimeout(self.config.body_read_timeout_s)
        try:
            return self._read_bounded_body(environ)
        except TimeoutError:
            raise Rejected(408, "request_timeout", f"the request body stopped arriving for "
                           f"{self.config.body_read_timeout_s:g}s") from None

    def _read_bounded_body(self, environ) -> bytes:
        limit = self.config.max_body_bytes
        declared = environ.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0:
                raise Rejected(400, "bad_request", "invalid Content-Length")
            if length > limit:
                raise _too_large(limit)
            return environ["wsgi.input"].read(length)
        body = environ["wsgi.input"].read(limit + 1)  # chunked: bound the read all the same
        if len(body) > limit:
            raise _too_large(limit)
        return body


def _too_large(limit: int) -> Rejected:
    return Rejected(413, "body_too_large", f"the body exceeds {limit} bytes")


def _compile_validator(event_type: str) -> None:
    """Compile the type's schema now, not in the first request that carries it (~1-3 ms each)."""
    try:
        contracts.validate({"event_type": event_type})
    except InvalidEvent:
        pass


def _publish_bug(exc: Exception) -> Rejected:
    """Not the broker: a bug on the publish path (e.g. a pika internal gone). 500, never 503,
    so it is not mistaken for an outage that retrying fixes; the traceback goes to the log."""
    log.error("publish failed: not a broker error", exception=repr(exc),
              traceback="".join(traceback.format_exception(exc)))
    return Rejected(500, "internal_error", "internal error while publishing")


def _refused(answer: replies.Reply, invalid_status: int = 422) -> Rejected:
    """A worker's refusal as the caller's HTTP answer (the status declared in shared/errors.py)."""
    headers = (("Retry-After", str(answer.retry_after_s)),) if answer.retry_after_s else ()
    return Rejected(errors.http_status(answer.error, invalid_status), answer.error, answer.detail, answer.field,
                    headers=headers)


def _failure_reason(exc: PublishError) -> str:
    """The spotter_publish_failures_total reason of a PublishError."""
    if isinstance(exc, Nacked):
        return "nack"
    if isinstance(exc, PublishTimeout):
        return "timeout"
    if isinstance(exc, BrokerUnavailable):
        return "broker_unavailable"
    return "error"


def _trace_headers(environ) -> dict | None:
    """W3C trace context travels on to the workers as an AMQP header."""
    traceparent = environ.get("HTTP_TRACEPARENT")
    return {"traceparent": traceparent} if traceparent and _TRACEPARENT.match(traceparent) else None


def create_app(config: Config | None = None) -> App:
    config = config or Config.from_env()
    setup_logging("ingress", config.log_level)
    return App(config)


class _LazyApp:
    """The WSGI callable gunicorn loads: builds this process's App on first use, never in the master."""

    def __init__(self):
        self._app: App | None = None
        self._lock = threading.Lock()

    def get(self) -> App:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = create_app()
        return self._app

    def __call__(self, environ, start_response):
        return (self._app or self.get())(environ, start_response)

    def warm(self) -> None:
        self.get().warm()

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


application = _LazyApp()
