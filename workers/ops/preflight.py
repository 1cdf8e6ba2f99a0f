"""Checks a worker runs before it consumes (DESIGN §4): its queue keeps our guarantees and its
database has every migration. A failed check is a `Refusal` naming what is wrong and the fix."""
from __future__ import annotations

import psycopg2

from shared import broker, topology
from workers.ops import management, migrate
from shared.errors import describe
from shared.logging import log


class Refusal(RuntimeError):
    """The worker must not start: `str()` says what is wrong, `fix` how to repair it."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


def database_name(url: str) -> str:
    """host/dbname of a database URL, never its password."""
    try:
        dsn = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        return "?"
    return f"{dsn.get('host', 'localhost')}/{dsn.get('dbname', '?')}"


def check_migrations(domain: str, url: str) -> None:
    """Refuse when the database lacks migrations; an unreachable database is only a warning
    (the runtime holds work and reconnects)."""
    try:
        missing = migrate.pending(domain, url)
    except Exception as exc:
        log.warning("could not check migrations", database=database_name(url), error=describe(exc)[:200])
        return
    if missing:
        raise Refusal(f"database {database_name(url)} ({domain}) lacks {len(missing)} migration(s): "
                      f"{', '.join(missing)}",
                      fix=f"run `workers migrate {domain}` (the migration Job in Kubernetes) with the same "
                          f"{domain.upper()}_DATABASE_URL, then start the worker again")


def queue_problems(info: dict, names: topology.QueueNames, delivery_limit: int) -> list[tuple[str, str]]:
    """(what is wrong, "argument" | "policy") for each way this queue breaks our guarantees."""
    args, policy = info.get("arguments") or {}, info.get("effective_policy_definition") or {}

    def effective(arg: str, key: str):  # for these a queue argument wins over a policy
        return (args[arg], "argument") if arg in args else (policy.get(key), "policy" if key in policy else "argument")

    problems = []
    if info.get("type") != "quorum":
        problems.append((f"type is {info.get('type')!r}, want 'quorum' (x-queue-type)", "argument"))
    dlx, source = effective("x-dead-letter-exchange", "dead-letter-exchange")
    if dlx != topology.DEAD_EXCHANGE:
        problems.append(("no dead-letter exchange (x-dead-letter-exchange)" if dlx is None else
                         f"dead-letters to {dlx!r} ({source}), want {topology.DEAD_EXCHANGE!r} "
                         f"(x-dead-letter-exchange)", source))
    dlrk, source = effective("x-dead-letter-routing-key", "dead-letter-routing-key")
    if dlx is not None and dlrk not in (None, names.worker):
        problems.append((f"dead-letter routing key is {dlrk!r} ({source}), want {names.worker!r} "
                         f"(x-dead-letter-routing-key)", source))
    # an argument and a policy may both set a delivery limit, and the lower one applies: each must be ours
    limits = {"argument": args.get("x-delivery-limit"), "policy": policy.get("delivery-limit")}
    if all(v is None for v in limits.values()):
        problems.append((f"no delivery limit (x-delivery-limit), want {delivery_limit}", "argument"))
    for source, value in limits.items():
        if value is not None and value != delivery_limit:
            name = "x-delivery-limit" if source == "argument" else "policy delivery-limit"
            problems.append((f"delivery limit ({name}) is {value}, want {delivery_limit}", source))
    strategy, source = effective("x-dead-letter-strategy", "dead-letter-strategy")
    if (strategy or "at-most-once") != "at-least-once":
        problems.append((f"dead-letter strategy is {strategy or 'at-most-once'!r} ({source}), want "
                         f"'at-least-once' (x-dead-letter-strategy)", source))
    overflow, source = effective("x-overflow", "overflow")
    if strategy == "at-least-once" and (overflow or "drop-head") != "reject-publish":
        problems.append((f"overflow is {overflow or 'drop-head'!r} ({source}): at-least-once dead-lettering "
                         f"needs 'reject-publish' (x-overflow)", source))
    return problems


def _fix(problems, info: dict, names: topology.QueueNames) -> str:
    fixes = []
    policies = info.get("policies") or [p for p in (info.get("policy"), info.get("operator_policy")) if p]
    if any(source == "policy" for _, source in problems):
        fixes.append(f"fix or clear the policy {' / '.join(map(repr, policies)) or '(see rabbitmqctl list_policies)'}"
                     f" that applies to queue {names.main!r} (`rabbitmqctl set_policy` / `clear_policy`)")
    if any(source == "argument" for _, source in problems):
        fixes.append(f"drain queue {names.main!r} (stop its producers and let it empty, or move its messages "
                     f"with a shovel), delete it (`rabbitmqctl delete_queue {names.main}`) and run "
                     f"`workers topology` to declare it again with our arguments")
    return "; then ".join(fixes)


def check_queue(rabbitmq_url: str, worker: str, routing_keys, exchange: str, delivery_limit: int,
                retry_delays_s) -> None:
    """Refuse when the worker's queue breaks our guarantees, policies included.

    A missing queue is declared first (as the worker would) so that policies matching its name
    are seen too. Without the management API only the arguments are checked, by the worker's own
    declare (PRECONDITION_FAILED): startup is not blocked on the plugin."""
    names = topology.QueueNames(worker)
    api = management.Management.from_env(rabbitmq_url)
    try:
        info = api.queue(names.main)
        if info is None and _declare(rabbitmq_url, worker, routing_keys, exchange, delivery_limit, retry_delays_s):
            info = api.queue(names.main)
    except management.ManagementUnavailable as exc:
        log.warning("cannot check queue policies, management API unavailable; checking arguments only",
                    worker=worker, queue=names.main, error=str(exc))
        return
    if info is None:
        return  # the broker is unreachable: the worker reconnects and declares it later
    try:
        info["effective_policy_definition"], info["policies"] = api.applied_policies(names.main)
    except management.ManagementUnavailable as exc:
        log.warning("cannot read policies; checking the queue's own view of them", worker=worker, error=str(exc))
    problems = queue_problems(info, names, delivery_limit)
    if problems:
        raise Refusal(f"queue {names.main!r} breaks our delivery guarantees: " + "; ".join(p for p, _ in problems),
                      fix=_fix(problems, info, names))


def _declare(rabbitmq_url, worker, routing_keys, exchange, delivery_limit, retry_delays_s) -> bool:
    try:
        connection = broker.connect(rabbitmq_url, client_name=f"worker-{worker}-preflight")
    except broker.CONNECTION_ERRORS:
        return False
    try:
        topology.declare_worker(connection.channel(), worker, routing_keys, exchange, delivery_limit, retry_delays_s)
        return True
    except broker.CONNECTION_ERRORS:
        return False  # e.g. 406 raced in: the worker's own declare reports it
    finally:
        if connection.is_open:
            connection.close()
