"""`workers`: the one entry point for people and Kubernetes alike (DESIGN §7)."""
from __future__ import annotations

import os
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import click
from dotenv import load_dotenv

from workers import WORKERS, load

REPO = Path(__file__).resolve().parents[1]


def _config():
    from shared.config import Config
    return Config.from_env()


@click.group()
@click.option("--env-file", default=".env", show_default=True, envvar="SPOTTER_ENV_FILE",
              help="Environment file for development; ignored when missing.")
def main(env_file: str) -> None:
    """Spotter operations: run workers, migrate, declare topology, inspect dead letters."""
    if env_file and Path(env_file).is_file():
        load_dotenv(env_file, override=False)  # the real environment wins


@main.command()
@click.argument("name", type=click.Choice(sorted(WORKERS)))
def run(name: str) -> None:
    """Run one worker in the foreground until SIGTERM."""
    from shared.config import database_url
    from shared.consumer import Consumer
    from shared.logging import setup_logging

    from shared import migrate
    from shared.logging import log
    from shared.topology import TopologyMismatch

    config = _config()
    setup_logging(name, config.log_level)
    spec = load(name)
    url = database_url(spec.database)
    try:
        missing = migrate.pending(spec.database, url)
    except Exception as exc:  # unreachable now: the runtime holds work and reconnects later
        log.warning("could not check migrations", worker=name, error=str(exc).strip()[:200])
        missing = []
    if missing:
        log.error("database lacks migrations; run `workers migrate`", worker=name, pending=missing)
        sys.exit(2)
    try:
        if spec.startup:
            spec.startup()
    except RuntimeError as exc:
        log.error("refusing to start", worker=name, error=str(exc))
        sys.exit(2)
    try:
        Consumer(spec, config, url).run()
    except TopologyMismatch as exc:
        log.error("refusing to start", worker=name, error=str(exc))
        sys.exit(2)


@main.command()
def serve() -> None:
    """The ingress under gunicorn (PORT, default 8080)."""
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", str(REPO / "ingress" / "gunicorn_conf.py"),
                               "ingress.app:application"])


def _domains(names, all_):
    from shared import migrate
    known = migrate.domains()
    chosen = known if all_ or not names else list(names)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise click.BadParameter(f"unknown database(s) {unknown}; known: {known}")
    return chosen


@main.command()
@click.argument("databases", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every database (the default when none is named).")
@click.option("--rollback", is_flag=True, help="Roll back instead of applying.")
@click.option("--count", default=1, show_default=True, help="With --rollback: how many migrations (0 = all).")
@click.option("--create/--no-create", default=False, help="Create missing databases first (development).")
def migrate(databases, all_, rollback, count, create) -> None:
    """Apply (or roll back) yoyo migrations: settings, video, … or --all."""
    from shared import migrate as m
    from shared.config import database_url

    for domain in _domains(databases, all_):
        url = database_url(domain, allow_plain=len(databases) == 1)
        if create and m.ensure_database(url):
            click.echo(f"{domain}: created database")
        if rollback:
            click.echo(f"{domain}: rolled back {m.rollback(domain, url, count)} migration(s)")
        else:
            click.echo(f"{domain}: applied {m.apply(domain, url)} migration(s)")


@main.command()
def topology() -> None:
    """Declare exchanges, every worker's queues and bindings (idempotent)."""
    from shared import broker, topology as t

    config = _config()
    connection = broker.connect(config.rabbitmq_url, client_name="workers-topology")
    channel = connection.channel()
    for name in sorted(WORKERS):
        spec = load(name)
        names = t.declare_worker(channel, name, spec.handlers.keys(), config.exchange,
                                 config.delivery_limit, config.retry_delays_s)
        click.echo(f"{names.main}: bound to {', '.join(sorted(spec.handlers))}")
        if spec.queries:
            t.declare_queries(channel, name, spec.queries.keys(), config.exchange)
            click.echo(f"{names.queries}: answers {', '.join(sorted(spec.queries))}")
    connection.close()


@main.command()
@click.argument("event_type")
@click.option("--user", "user_id", required=True, help="user_id of the envelope (UUID).")
@click.option("--data", "data", required=True, help="The event's data as JSON.")
@click.option("--id", "event_id", default=None, help="client_generated_id (default: a new UUID).")
@click.option("--timestamp", default=None, help="RFC 3339 timestamp (default: now).")
def publish(event_type, user_id, data, event_id, timestamp) -> None:
    """Publish one event straight to the exchange (what the seed did with rabbitmqadmin)."""
    from shared import broker, envelope, strictjson
    from shared.errors import InvalidEvent
    from shared.publisher import BatchPublisher, Message, Unroutable

    config = _config()
    raw = {"schema_version": envelope.DEFAULT_SCHEMA_VERSION, "event_type": event_type,
           "client_generated_id": event_id or str(uuid.uuid4()), "user_id": user_id,
           "timestamp": timestamp or envelope.rfc3339(datetime.now(timezone.utc)),
           "source_service": "cli"}
    try:
        raw["data"] = strictjson.loads(data)
        event = envelope.from_dict(raw, config.max_clock_skew_s)
    except InvalidEvent as exc:
        raise click.ClickException(f"invalid event: {exc}") from None
    publisher = BatchPublisher(config.rabbitmq_url, "workers-publish")
    try:
        publisher.publish([Message(config.exchange, event.event_type, event.to_json(),
                                   broker.event_properties(event), mandatory=True)])
    except Unroutable:
        raise click.ClickException(f"no queue is bound to {event_type}: run `workers topology`") from None
    finally:
        publisher.close()
    click.echo(event.id)


@main.command()
@click.argument("user_id")
@click.option("--ttl", default=3600, show_default=True, help="Seconds until the token expires.")
def token(user_id, ttl) -> None:
    """Mint a development bearer token for USER_ID with the development key."""
    from shared import tokens

    try:
        click.echo(tokens.mint(user_id, _config().jwt, ttl))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


def _dead_letter_queue(worker):
    from shared import broker
    from shared.deadletters import DeadLetterQueue

    return DeadLetterQueue(broker.connect(_config().rabbitmq_url, client_name="workers-dlq"), worker)


def _select(letters, message_id, reason, event_type, everything):
    if not (message_id or reason or event_type or everything):
        raise click.UsageError("choose what: --id, --reason, --event-type or --all")
    return [d for d in letters
            if (not message_id or d.properties.message_id == message_id)
            and (not reason or d.reason == reason) and (not event_type or d.event_type == event_type)]


@dlq.command("list")
@click.argument("worker", type=click.Choice(sorted(WORKERS)))
def dlq_list(worker) -> None:
    """Dead letters of WORKER grouped by reason and event type."""
    q = _dead_letter_queue(worker)
    letters = q.peek()
    click.echo(f"{q.names.dead}: {len(letters)} message(s)")
    for (reason, event_type), count in sorted(q.groups(letters).items()):
        click.echo(f"  {count:6d}  {reason:24s} {event_type}")
    for d in letters[:20]:
        s = d.summary()
        click.echo(f"  - {s['message_id']}  {s['event_type']}  {s['reason']}: {s['detail']}")
    q.connection.close()


@dlq.command("show")
@click.argument("worker", type=click.Choice(sorted(WORKERS)))
@click.argument("message_id")
def dlq_show(worker, message_id) -> None:
    """One dead letter: headers and body."""
    import orjson

    q = _dead_letter_queue(worker)
    found = [d for d in q.peek() if d.properties.message_id == message_id]
    q.connection.close()
    if not found:
        raise click.ClickException(f"no dead letter with message_id {message_id}")
    d = found[0]
    click.echo(orjson.dumps({**d.summary(), "headers": d.headers, "body": d.body.decode(errors="replace")},
                            option=orjson.OPT_INDENT_2, default=str).decode())


@dlq.command("replay")
@click.argument("worker", type=click.Choice(sorted(WORKERS)))
@click.option("--id", "message_id", help="Replay the message with this id.")
@click.option("--reason", help="Replay every message dead-lettered for this reason.")
@click.option("--event-type", help="Replay every message of this event type.")
@click.option("--all", "everything", is_flag=True, help="Replay everything.")
def dlq_replay(worker, message_id, reason, event_type, everything) -> None:
    """Send dead letters back to WORKER's queue (idempotency makes this safe)."""
    q = _dead_letter_queue(worker)
    chosen = _select(q.peek(), message_id, reason, event_type, everything)
    click.echo(f"replayed {q.replay(chosen)} message(s) to {q.names.main}")
    q.connection.close()


@dlq.command("purge")
@click.argument("worker", type=click.Choice(sorted(WORKERS)))
@click.option("--id", "message_id")
@click.option("--reason")
@click.option("--event-type")
@click.option("--all", "everything", is_flag=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(worker, message_id, reason, event_type, everything, yes) -> None:
    """Delete dead letters for good."""
    q = _dead_letter_queue(worker)
    chosen = _select(q.peek(), message_id, reason, event_type, everything)
    if chosen and not yes:
        click.confirm(f"delete {len(chosen)} dead letter(s) of {worker} for good?", abort=True)
    click.echo(f"purged {q.purge(chosen)} message(s)")
    q.connection.close()


@main.command()
def status() -> None:
    """Per worker: queue depth, consumers, retries, dead letters, outbox backlog."""
    import psycopg2
    import pika

    from shared import broker, outbox
    from shared.config import database_url
    from shared.topology import QueueNames

    config = _config()
    connection = broker.connect(config.rabbitmq_url, client_name="workers-status")
    for name in sorted(WORKERS):
        names = QueueNames(name)

        def depth(queue):
            channel = connection.channel()
            try:
                ok = channel.queue_declare(queue, passive=True).method
                return ok.message_count, ok.consumer_count
            except pika.exceptions.ChannelClosedByBroker:
                return None, None
            finally:
                if channel.is_open:
                    channel.close()
        ready, consumers = depth(names.main)
        retrying = sum(depth(names.retry(d))[0] or 0 for d in config.retry_delays_s)
        dead, _ = depth(names.dead)
        try:
            conn = psycopg2.connect(database_url(load(name).database, allow_plain=False), connect_timeout=3)
            backlog = outbox.backlog(conn)
            conn.close()
        except psycopg2.Error as exc:
            backlog = f"unreachable ({str(exc).strip().splitlines()[0]})"
        click.echo(f"{name:10s} ready={ready} consumers={consumers} retrying={retrying} dead={dead} "
                   f"outbox_backlog={backlog}")
    connection.close()


@main.command()
@click.option("--port", default=None, type=int, help="Ingress port (default PORT or 8080).")
def dev(port) -> None:
    """Everything locally in the foreground: databases, migrations, topology, ingress, every worker."""
    from workers.devstack import run_dev_stack

    run_dev_stack(port)


if __name__ == "__main__":
    main()
