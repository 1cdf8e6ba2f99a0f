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

REPO = Path(__file__).resolve().parents[2]


def _config():
    from shared.config import Config
    return Config.from_env()


@click.group()
@click.option("--env-file", default=".env", show_default=True, envvar="SPOTTER_ENV_FILE",
              help="Development environment file, read by `workers dev` and `workers token` only; "
                   "ignored when missing.")
def main(env_file: str) -> None:
    """Spotter operations: run workers, migrate, declare topology, inspect dead letters."""
    from shared.logging import setup_logging
    # Until a command says otherwise (`run`, `migrate` log on stdout), library warnings and a
    # crash are JSON lines on stderr: stdout is an operator command's answer.
    setup_logging("workers", os.environ.get("LOG_LEVEL") or "INFO", to_stderr=True)


def _dev_env_file() -> Path:
    """Load the development environment file (the real environment wins) and return its path.

    Only `workers dev` and `workers token` call this: a process started any other way (`serve`,
    `run`, Kubernetes) takes its configuration from its environment alone, never from a `.env`
    that happens to lie in its working directory."""
    env_file = Path(click.get_current_context().find_root().params.get("env_file") or ".env")
    if env_file.is_file():
        load_dotenv(env_file, override=False)
    return env_file


@main.command()
@click.argument("name", type=click.Choice(sorted(WORKERS)))
def run(name: str) -> None:
    """Run one worker in the foreground until SIGTERM."""
    from shared.config import database_url
    from workers.runtime.consumer import Consumer
    from shared.logging import setup_logging

    from workers.ops import preflight
    from shared import secrets
    from shared.logging import log
    from shared.topology import TopologyMismatch

    setup_logging(name, os.environ.get("LOG_LEVEL") or "INFO")  # a worker's every line on stdout, a crash included
    secrets.enforce(name)  # before anything else: exit 2 on a missing, placeholder or weak key
    config = _config()
    setup_logging(name, config.log_level)
    spec = load(name)
    url = database_url(spec.database)
    try:
        preflight.check_migrations(spec.database, url)
    except preflight.Refusal as exc:
        log.error("refusing to start: database lacks migrations", worker=name, database=spec.database,
                  error=str(exc), fix=exc.fix)
        sys.exit(2)
    try:
        preflight.check_queue(config.rabbitmq_url, name, spec.handlers.keys(), config.exchange,
                              config.delivery_limit, config.retry_delays_s)
    except preflight.Refusal as exc:
        log.error("refusing to start", worker=name, queue=name, error=str(exc), fix=exc.fix)
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
        log.error("refusing to start", worker=name, queue=name, error=str(exc),
                  fix="drain and delete the queue, then run `workers topology` to recreate it")
        sys.exit(2)


@main.command()
def serve() -> None:
    """The ingress under gunicorn (PORT, default 8080); refuses to start without usable keys."""
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", str(REPO / "ingress" / "gunicorn_conf.py"),
                               "ingress.app:application"])


def _domains(names, all_):
    from workers.ops import migrate
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
@click.option("--status", "show_status", is_flag=True,
              help="List applied and pending migrations; exit 1 if any is pending or a database cannot be read.")
def migrate(databases, all_, rollback, count, create, show_status) -> None:
    """Apply (or roll back) yoyo migrations: settings, video, … or --all."""
    import psycopg2

    from workers.ops import migrate as m
    from shared.config import database_url
    from shared.errors import describe
    from shared.logging import log, setup_logging

    if show_status:
        sys.exit(_migration_status(databases, all_))
    setup_logging("migrate", os.environ.get("LOG_LEVEL") or "INFO")  # the migration Job: JSON lines on stdout
    for domain in _domains(databases, all_):
        url = database_url(domain, allow_plain=len(databases) == 1)
        try:
            if create and m.ensure_database(url):
                log.info("created database", database=domain)
            if rollback:
                log.info("rolled back", database=domain, migrations=m.rollback(domain, url, count))
            else:
                log.info("migrated", database=domain, migrations=m.apply(domain, url))
        except psycopg2.Error as exc:  # unreachable, refused: the Job fails and Kubernetes retries it
            log.error("migration failed", database=domain, error=describe(exc)[:300])
            sys.exit(1)


def _migration_status(databases, all_) -> int:
    """One block per database (applied, then pending, in order); 1 when anything is pending or unreadable."""
    from shared.config import database_url
    from workers.ops import migrate as m
    from workers.ops.podhealth import redact  # no credentials of a URL in the output

    behind = False
    for domain in _domains(databases, all_):
        url = database_url(domain, allow_plain=len(databases) == 1)
        try:
            listed = m.status(domain, url)
        except Exception as exc:  # unreachable, missing database: a deploy pipeline must stop here
            click.echo(f"{domain}: cannot read its migrations: {type(exc).__name__}: {redact(exc)[:200]}")
            behind = True
            continue
        waiting = [i for i, applied in listed if not applied]
        click.echo(f"{domain}: {len(listed) - len(waiting)} applied, {len(waiting)} pending")
        for migration_id, applied in listed:
            click.echo(f"  {'applied' if applied else 'pending'}  {migration_id}")
        behind = behind or bool(waiting)
    return 1 if behind else 0


@main.command()
@click.argument("databases", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of text.")
def prune(databases, dry_run, as_json) -> None:
    """Delete what is past its retention, in short batches: every database (or those named) and the bucket.

    One line per table or bucket prefix with how many rows or objects went (docs/operations.md,
    Retention). Exit 2 when a retention is unsafe or malformed, 1 when a database or the bucket
    failed (the others are still pruned)."""
    from shared.config import StorageConfig, database_url
    from workers.ops import prune as p
    from workers.ops import retention as r
    from workers.runtime.storage import Storage

    names = _domains(databases, False)
    try:
        config, storage_config = _config(), StorageConfig.from_env()
        retention = r.RetentionConfig.from_env()
        r.check(retention, config.max_attempts, config.retry_delays_s, storage_config.upload_expiry_s)
        from workers.notify.worker import InboxLimits
        from workers.settings.access_limits import Limits
        InboxLimits.from_env(), Limits.from_env()  # the other retentions prune applies: malformed → refuse now
    except (ValueError, RuntimeError) as exc:
        click.echo(f"refusing to prune: {exc}", err=True)
        sys.exit(2)
    urls = {d: database_url(d, allow_plain=len(databases) == 1) for d in names}
    results = p.prune(urls, retention, dry_run, storage=lambda: Storage(storage_config, read_timeout=30))
    for result in results:
        click.echo(result.json(dry_run) if as_json else result.line(dry_run))
    sys.exit(1 if any(result.error for result in results) else 0)


@main.command()
def topology() -> None:
    """Declare exchanges, every worker's queues and bindings (idempotent)."""
    from shared import broker, topology as t
    from workers.runtime import receipts

    config = _config()
    connection = broker.connect(config.rabbitmq_url, client_name="workers-topology")
    channel = connection.channel()
    for name in sorted(WORKERS):
        spec = receipts.with_receipts(load(name))  # the runtime adds <worker>.receipts
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
    from workers.runtime.publisher import BatchPublisher, Message, Unroutable

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
    """Mint a development bearer token for USER_ID with the development key (reads .env)."""
    from shared import tokens

    _dev_env_file()
    config = _config().jwt
    if ttl > config.max_ttl_s:
        raise click.ClickException(f"--ttl {ttl} exceeds JWT_MAX_TTL_S ({config.max_ttl_s}): the ingress would refuse it")
    try:
        click.echo(tokens.mint(user_id, config, ttl))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge.

    A peek holds dead letters unacked on one channel until the command ends (then they go back):
    fine up to --limit messages (default 10000); beyond it, the command says how many it did not
    reach, and a second run after a replay or purge gets to them."""


def _dead_letter_queue(worker):
    from shared import broker
    from workers.ops.deadletters import DeadLetterQueue

    try:
        q = DeadLetterQueue(broker.connect(_config().rabbitmq_url, client_name="workers-dlq"), worker)
        q.total = q.depth()
    except broker.CONNECTION_ERRORS as exc:
        raise click.ClickException(f"cannot read {worker}.dead: {type(exc).__name__} {exc} "
                                   "(broker down, or no topology: run `workers topology`)") from None
    return q


def _selectors(fn):
    for option in reversed([
            click.option("--id", "message_id", help="The message with this message_id."),
            click.option("--reason", help="Every message dead-lettered for this reason (e.g. not_found)."),
            click.option("--event-type", help="Every message of this event type."),
            click.option("--all", "everything", is_flag=True, help="Everything (combine with nothing else)."),
            click.option("--limit", default=10_000, show_default=True, help="Peek at most this many.")]):
        fn = option(fn)
    return fn


def _chosen(q, message_id, reason, event_type, everything, limit):
    from workers.ops.deadletters import select

    if not (message_id or reason or event_type or everything):
        raise click.UsageError("choose what: --id, --reason, --event-type or --all")
    if everything and (message_id or reason or event_type):
        raise click.UsageError("--all takes no other selector")
    letters = q.peek(limit, message_id=message_id)
    _left_behind(q, letters)
    return select(letters, message_id, reason, event_type)


def _left_behind(q, letters) -> None:
    if q.total > len(letters):
        click.echo(f"note: {q.total - len(letters)} more dead letter(s) beyond the {len(letters)} read "
                   f"(--limit); run again to reach them", err=True)


@dlq.command("list")
@click.argument("worker", type=click.Choice(sorted(WORKERS)))
@click.option("--first", default=20, show_default=True, help="How many messages to list after the groups.")
@click.option("--limit", default=10_000, show_default=True, help="Peek at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def dlq_list(worker, first, limit, as_json) -> None:
    """Dead letters of WORKER grouped by reason and event type, then the first few."""
    import orjson

    q = _dead_letter_queue(worker)
    try:
        letters = q.peek(limit)
    finally:
        q.close()
    groups = sorted(q.groups(letters).items(), key=lambda kv: (-kv[1], kv[0]))
    _left_behind(q, letters)
    if as_json:
        click.echo(orjson.dumps({
            "queue": q.names.dead, "total": q.total, "read": len(letters), "truncated": q.total > len(letters),
            "groups": [{"reason": r, "event_type": t, "count": n} for (r, t), n in groups],
            "messages": [d.summary() for d in letters[:first]]}, option=orjson.OPT_INDENT_2, default=str).decode())
        return
    click.echo(f"{q.names.dead}: {q.total} message(s)")
    for (reason, event_type), count in groups:
        click.echo(f"  {count:6d}  {reason:24s} {event_type}")
    for d in letters[:first]:
        s = d.summary()
        click.echo(f"  - {s['message_id']}  {s['event_type']}  {s['reason']}: {s['detail']}")
    if len(letters) > first:
        click.echo(f"  … {len(letters) - first} more (--first)")


@dlq.command("show")
@click.argument("worker", type=click.Choice(sorted(WORKERS)))
@click.argument("message_id")
@click.option("--limit", default=10_000, show_default=True, help="Peek at most this many.")
def dlq_show(worker, message_id, limit) -> None:
    """One dead letter: summary, headers and body, as JSON."""
    import orjson

    q = _dead_letter_queue(worker)
    try:
        found = [d for d in q.peek(limit, message_id=message_id) if d.message_id == message_id]
    finally:
        q.close()
    if not found:
        raise click.ClickException(f"no dead letter with message_id {message_id} in {q.names.dead}")
    d = found[0]
    click.echo(orjson.dumps({**d.summary(), "headers": d.headers, "body": d.body.decode(errors="replace")},
                            option=orjson.OPT_INDENT_2, default=str).decode())


@dlq.command("replay")
@click.argument("worker", type=click.Choice(sorted(WORKERS)))
@_selectors
def dlq_replay(worker, message_id, reason, event_type, everything, limit) -> None:
    """Send dead letters back to WORKER's own queue (idempotency makes this safe).

    Dead-letter headers are stripped (attempts start again) and x-replayed counts replays. Each
    dead letter is removed only after the broker confirmed its republish."""
    from workers.ops.deadletters import ReplayStopped

    q = _dead_letter_queue(worker)
    try:
        chosen = _chosen(q, message_id, reason, event_type, everything, limit)
        try:
            done = q.replay(chosen)
        except ReplayStopped as exc:
            raise click.ClickException(f"replayed {exc.done} of {len(chosen)} to {q.names.main}; {exc}; "
                                       "the rest stay dead-lettered") from None
    finally:
        q.close()
    click.echo(f"replayed {done} message(s) to {q.names.main}")


@dlq.command("purge")
@click.argument("worker", type=click.Choice(sorted(WORKERS)))
@_selectors
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(worker, message_id, reason, event_type, everything, limit, yes) -> None:
    """Delete dead letters for good (asks first)."""
    q = _dead_letter_queue(worker)
    try:
        chosen = _chosen(q, message_id, reason, event_type, everything, limit)
        if chosen and not yes:
            groups = ", ".join(f"{n} {r}/{t}" for (r, t), n in sorted(q.groups(chosen).items()))
            click.confirm(f"delete {len(chosen)} dead letter(s) of {worker} ({groups}) for good?", abort=True)
        purged = q.purge(chosen)
    finally:
        q.close()
    click.echo(f"purged {purged} message(s)")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def status(as_json) -> None:
    """Per worker: ready, unacked, consumers, retrying, dead letters, outbox backlog.

    Unacked comes from the management API (statistics lag a few seconds); without it, it shows
    as "?" and a note says why. So does how full each dead-letter queue is against its bound
    (DEAD_LETTER_MAX_BYTES / DEAD_LETTER_MAX_MESSAGES, or a policy): from 80 % on, or without a
    bound, a warning says what to do. The exit status is 0 whenever the state could be read:
    `bin/pod-health-check` is the check that fails."""
    import orjson

    from shared import broker
    from workers.ops.podhealth import dead_used, outbox_backlog, queue_rows

    config = _config()
    try:
        connection = broker.connect(config.rabbitmq_url, client_name="workers-status")
    except broker.CONNECTION_ERRORS as exc:
        raise click.ClickException(f"broker unreachable: {type(exc).__name__}") from None
    try:
        rows, note = queue_rows(connection, config.rabbitmq_url, config.retry_delays_s)
    finally:
        connection.close()
    backlogs = {}
    for row in rows:
        domain = load(row["worker"]).database
        if domain not in backlogs:
            backlogs[domain] = outbox_backlog(domain)
        row["database"], row["outbox_backlog"] = domain, backlogs[domain]
    warnings = [r["dead_warning"] for r in rows if r["exists"] and r["dead_warning"]]
    if as_json:
        click.echo(orjson.dumps({"workers": rows, "note": note, "warnings": warnings},
                                option=orjson.OPT_INDENT_2).decode())
        return
    if note:
        click.echo(f"note: {note}", err=True)
    for r in rows:
        if not r["exists"]:
            click.echo(f"{r['worker']:10s} queue missing (run `workers topology`) outbox_backlog={r['outbox_backlog']}")
            continue
        unacked = "?" if r["unacked"] is None else r["unacked"]
        near = " NEAR BOUND" if r["dead_near_bound"] else ""
        click.echo(f"{r['worker']:10s} ready={r['ready']} unacked={unacked} consumers={r['consumers']} "
                   f"retrying={r['retrying']} dead={r['dead']}{dead_used(r)}{near} "
                   f"outbox_backlog={r['outbox_backlog']}")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@main.group()
def storage() -> None:
    """The bucket (S3_ENDPOINT_URL, S3_BUCKET): its lifecycle and CORS rules."""


@storage.command("setup")
@click.option("--create", is_flag=True, help="Create the bucket if it is missing (development).")
@click.option("--abort-multipart-days", default=1, show_default=True, type=click.IntRange(min=1),
              help="Abort multipart uploads still incomplete this many days after they began.")
def storage_setup(create, abort_multipart_days) -> None:
    """Apply the bucket's lifecycle and CORS rules; idempotent (docs/operations.md).

    Run once per bucket and after changing CORS_ALLOWED_ORIGINS. Prints `applied` or `unchanged`
    per configuration; exits 1 when the store cannot be reached or refuses, 2 when
    CORS_ALLOWED_ORIGINS is malformed."""
    from shared.config import StorageConfig
    from workers.ops import storage_setup as s

    try:
        origins = s.cors_origins(_config().cors_allowed_origins)
    except ValueError as exc:
        click.echo(f"storage setup: {exc}", err=True)
        sys.exit(2)
    try:
        lines = s.setup(StorageConfig.from_env(), origins, abort_multipart_days, create,
                         region_set=bool(os.environ.get("S3_REGION")))
    except s.SetupFailed as exc:
        click.echo(f"storage setup failed: {exc}", err=True)
        sys.exit(1)
    for line in lines:
        click.echo(line)


@main.command()
@click.option("--port", default=None, type=int, help="Ingress port (default PORT or 8080).")
def dev(port) -> None:
    """Everything locally in the foreground: databases, migrations, topology, ingress, every worker."""
    from workers.ops.devstack import run_dev_stack

    run_dev_stack(port, _dev_env_file())


if __name__ == "__main__":
    main()
