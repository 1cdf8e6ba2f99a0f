"""Every use of pika's private attributes, in one place, checked before use.

The ingress writes its publish frames itself (shared/frames.py) straight into the connection's
output, sends early under load and joins pika's write buffers into one send(); BatchPublisher
queues frames on a BlockingChannel's underlying channel so one tx.commit flushes them all. All of
that leans on pika internals that any release may rename (setup.cfg pins pika <1.5, requirements.lock
the exact version). `self_check()` runs once per process: the private attributes are there and
frames.py still writes pika's own bytes. If not, every caller here uses pika's public API instead
(slower, same results), after one warning. No other module may touch a pika private attribute.
"""
from __future__ import annotations

import pika
from pika import frame, spec
from pika.adapters.utils import io_services_utils
from pika.connection import Connection

from shared import frames
from shared import broker
from shared.envelope import new_event
from shared.logging import log

# None until self_check() has decided; then whether the private path is in use
FAST_PATH_ACTIVE: bool | None = None

# (object, dotted attribute path) the fast path calls; instance attributes are checked on the live
# connection (check_connection) and channel (queue_publish), which is where they exist
REQUIRED = (
    (Connection, "_output_marshaled_frames"),
    (io_services_utils, "_AsyncTransportBase._produce"),
    (io_services_utils, "_AsyncPlaintextTransport._on_socket_writable"),
)
_PLAINTEXT = getattr(io_services_utils, "_AsyncPlaintextTransport", None)


def self_check(required=REQUIRED) -> bool:
    """Decide the path once per process and log it; `required` is a seam for the tests."""
    global FAST_PATH_ACTIVE
    if FAST_PATH_ACTIVE is not None:
        return FAST_PATH_ACTIVE
    missing = [f"{getattr(owner, '__name__', owner)}.{path}" for owner, path in required if not _has(owner, path)]
    if missing:
        return _fall_back(f"pika {pika.__version__} lacks {', '.join(missing)}")
    try:
        same = _frames_match()
    except Exception as exc:  # a changed pika signature is a failed check, not a crash at start
        return _fall_back(f"frame self-check failed: {exc!r}")
    if not same:
        return _fall_back("shared/frames.py no longer writes pika's bytes")
    FAST_PATH_ACTIVE = True
    log.info("pika fast path active", pika=pika.__version__)
    return True


def fast_path_active() -> bool:
    return self_check() if FAST_PATH_ACTIVE is None else FAST_PATH_ACTIVE


def _has(owner, path: str) -> bool:
    for name in path.split("."):
        owner = getattr(owner, name, None)
        if owner is None:
            return False
    return True


def _fall_back(why: str) -> bool:
    global FAST_PATH_ACTIVE
    if FAST_PATH_ACTIVE is not False:  # one warning per process, whoever notices first
        log.warning("pika fast path disabled, publishing through pika's public API", reason=why,
                    pika=pika.__version__)
    FAST_PATH_ACTIVE = False
    return False


def _frames_match() -> bool:
    """A sample publish, both property forms and a body over three frames, against pika's own."""
    event = new_event("self.check", "7c9e6679-7425-40de-944b-e07fc1f90ae7", {}, "self-check")
    props = broker.event_properties(event, {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    body, body_max = bytes(range(256)) * 2 + b"x", 200
    expected = b"".join([
        frame.Method(1, spec.Basic.Publish(exchange="app.events", routing_key="self.check", mandatory=True)).marshal(),
        frame.Header(1, len(body), props).marshal(),
        *(frame.Body(1, body[i:i + body_max]).marshal() for i in range(0, len(body), body_max))])
    encoded = frames.event_properties(event, {"traceparent": props.headers["traceparent"]}, props.timestamp)
    return (frames.publish(1, "app.events", "self.check", body, props, body_max) == expected
            and frames.publish(1, "app.events", "self.check", body, encoded, body_max) == expected)


def check_connection(connection) -> bool:
    """On each new connection: the instance attributes the fast path reads exist."""
    if not fast_path_active():
        return False
    transport = getattr(connection, "_transport", None)
    if not isinstance(getattr(connection, "_body_max_length", None), int) \
            or not hasattr(transport, "_tx_buffers"):
        return _fall_back(f"pika {pika.__version__} connection lacks _body_max_length, _transport or _tx_buffers")
    return True


# ---- the ingress (GeventConnection, asynchronous Channel) -----------------------------------
def publish(channel, exchange: str, routing_key: str, body: bytes, properties) -> None:
    """Channel.basic_publish(..., mandatory=True); `properties` may be frames.event_properties bytes.

    Raises pika's connection/channel errors (shared.broker.CONNECTION_ERRORS) when closed.
    """
    if FAST_PATH_ACTIVE:
        connection = channel.connection
        if connection.is_closed:  # what pika's own _send_frame refuses; _transport is None by then
            raise pika.exceptions.ConnectionWrongStateError("the connection is closed")
        # _body_max_length: frame_max less the frame overhead, where pika splits bodies
        connection._output_marshaled_frames([frames.publish(
            channel.channel_number, exchange, routing_key, body, properties, connection._body_max_length)])
        return
    if isinstance(properties, bytes):
        decoded = spec.BasicProperties()
        decoded.decode(properties)
        properties = decoded
    channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)


def send_buffered(channel, at_bytes: int) -> None:
    """Send what the socket takes now if `at_bytes` or more wait; the writer keeps the rest."""
    if FAST_PATH_ACTIVE:
        transport = channel.connection._transport
        # plaintext only: a TLS transport must not be written to outside its own state machine
        if type(transport) is _PLAINTEXT and transport.get_write_buffer_size() >= at_bytes:
            transport._on_socket_writable()


def coalesce_writes() -> None:
    """Send everything pika has buffered in one write instead of one send() per frame.

    pika writes each frame (a publish is three: method, header, body) with its own send(); on a
    busy hub dozens of messages wait in the buffer, and a syscall per frame became the
    publisher's largest cost (py-spy). Joining them first is what one writev would do.
    Patches pika's transport class for the whole process, so only on the fast path.
    """
    if not fast_path_active():
        return
    base = io_services_utils._AsyncTransportBase
    produce = base._produce
    if getattr(produce, "coalesced", False):
        return

    def _produce(self) -> None:
        if FAST_PATH_ACTIVE and len(self._tx_buffers) > 1:  # a later fall back turns it off
            joined = b"".join(self._tx_buffers)
            self._tx_buffers.clear()
            self._tx_buffers.append(joined)
        produce(self)

    _produce.coalesced = True
    base._produce = _produce


# ---- the workers (BlockingChannel) --------------------------------------------------------
def queue_publish(channel, exchange: str, routing_key: str, body: bytes, properties, mandatory: bool) -> None:
    """Queue a publish on a BlockingChannel without flushing: the caller's tx_commit sends it.

    BlockingChannel.basic_publish flushes the socket after every message; its underlying channel
    (`_impl`) only queues. The public fallback flushes per message: slower, same transaction.
    """
    impl = getattr(channel, "_impl", None) if fast_path_active() else None
    if impl is None:
        if FAST_PATH_ACTIVE:
            _fall_back(f"pika {pika.__version__} BlockingChannel lacks _impl")
        channel.basic_publish(exchange, routing_key, body, properties, mandatory)
        return
    impl.basic_publish(exchange, routing_key, body, properties, mandatory)


def virtual_host(connection) -> str:
    """The vhost a BlockingConnection is on, for operator advice (pika has no public accessor);
    "/" when it cannot tell."""
    params = getattr(getattr(connection, "_impl", None), "params", None)
    return getattr(params, "virtual_host", None) or "/"


def confirm_select(channel, on_confirm) -> bool:
    """Put a BlockingChannel in confirm mode with our own basic.ack/nack callback, so that a batch
    of publishes is confirmed in one round trip (BlockingChannel's own confirm mode waits for each
    message in turn). False when pika lacks what this needs: the caller then uses
    `channel.confirm_delivery()` and publishes one confirmed message at a time (slower, same result)."""
    impl = getattr(channel, "_impl", None) if fast_path_active() else None
    if impl is None or not callable(getattr(channel, "_flush_output", None)):
        if FAST_PATH_ACTIVE:
            _fall_back(f"pika {pika.__version__} BlockingChannel lacks _impl or _flush_output")
        return False
    selected = []
    impl.confirm_delivery(ack_nack_callback=on_confirm, callback=selected.append)
    channel._flush_output(lambda: bool(selected))
    return True


def await_confirms(channel, done) -> None:
    """Process the connection's I/O until `done()` (every confirm in) or the channel closes; the
    wait tx_commit had (heartbeats and blocked_connection_timeout end it on a dead connection)."""
    channel._flush_output(done)
    if not channel.is_open:
        raise pika.exceptions.ChannelWrongStateError("the channel closed while waiting for confirms")
