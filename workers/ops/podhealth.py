"""`bin/pod-health-check`: one timestamped report of the whole stack in `infra-health.log`.

Sections: pods (when kubectl reaches a cluster), broker (queues, consumers, dead letters),
databases (reachable, migrated), storage (bucket reachable). One line per check, OK / FAIL /
SKIP, then a summary line. Exit 0 healthy, 1 unhealthy, 2 usage error. `workers status`
shares the queue and outbox readings below.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import click

from workers import WORKERS

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]*@")


def redact(text: str) -> str:
    """First line of an error, with any credentials of a URL in it removed."""
    line = (str(text).strip().splitlines() or [""])[0]
    return _URL_CREDENTIALS.sub(r"\1***@", line)[:200]


@dataclass
class Check:
    section: str
    name: str
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:4s}  {self.name}: {self.detail}"


# ---- readings shared with `workers status` -------------------------------------------------------

def queue_rows(connection, amqp_url: str, retry_delays_s, workers=None) -> tuple[list[dict], str | None]:
    """Per worker: ready, unacked, consumers, retrying, dead (None: queue missing), and how full
    its dead-letter queue is against its bound (workers/ops/deadletters.py bound_report: dead_bytes,
    dead_bound, dead_bounded, dead_used_percent, dead_near_bound, dead_warning).

    Ready, consumers and dead come from a passive declare (exact, now); unacked, the dead queue's
    bytes and bound only from the management API, whose statistics lag a few seconds. The note
    says when it is unavailable."""
    import pika

    from workers.ops import management
    from shared.config import DeadLetterBounds
    from workers.ops.deadletters import bound_report
    from shared.topology import QueueNames, dead_letter_policy_command

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

    note = None
    api = management.Management.from_env(amqp_url)
    policies = None
    try:
        stats = api.queues()
    except management.ManagementUnavailable as exc:
        stats, note = None, f"unacked unknown, dead-letter bounds too: {exc}"
    else:
        try:  # a queue's own view of its policies lags seconds behind a change; reading the policies
            policies = api.policies()  # needs the policymaker tag: without it, that view will do
        except management.ManagementUnavailable:
            pass

    def dead_info(queue):
        info = (stats or {}).get(queue)
        if info is None or policies is None:
            return info
        return {**info, "effective_policy_definition": api.applied_policies(queue, policies)[0]}
    try:
        bounds = DeadLetterBounds.from_env()
    except ValueError:  # the workers refuse such a value; the report still shows what the broker holds
        bounds = DeadLetterBounds()
    fix = dead_letter_policy_command(bounds, api.vhost)
    rows = []
    for name in sorted(workers or WORKERS):
        names = QueueNames(name)
        ready, consumers = depth(names.main)
        retries = [depth(names.retry(d))[0] for d in retry_delays_s]
        unacked = None
        if stats is not None and names.main in stats:
            unacked = stats[names.main]["messages_unacknowledged"]
        dead = depth(names.dead)[0]
        rows.append({"worker": name, "queue": names.main, "exists": ready is not None, "ready": ready,
                     "unacked": unacked, "consumers": consumers,
                     "retrying": sum(r or 0 for r in retries), "dead": dead,
                     **bound_report(names, dead, dead_info(names.dead), fix)})
    return rows, note


def dead_used(row: dict) -> str:
    """" (42% of bound)" after the dead count: the fuller of messages and bytes; "" when unknown."""
    if row.get("dead_bounded") is False:
        return " (unbounded)"
    used = row.get("dead_used_percent")
    if not used:
        return ""
    return f" ({max(v for v in used.values() if v is not None):g}% of bound)"


def outbox_backlog(domain: str):
    """Rows waiting in the database's outbox, or 'unreachable (…)' (never the URL)."""
    import psycopg2

    from workers.runtime import outbox
    from shared.config import database_url

    try:
        conn = psycopg2.connect(database_url(domain, allow_plain=False), connect_timeout=3)
    except psycopg2.Error as exc:
        return f"unreachable ({redact(exc)})"
    try:
        return outbox.backlog(conn)
    except psycopg2.Error as exc:
        return f"unreachable ({redact(exc)})"
    finally:
        conn.close()


# ---- sections -----------------------------------------------------------------------------------

def check_pods(namespace: str, max_restarts: int, kubectl: str = "kubectl") -> list[Check]:
    section = "pods"
    if not shutil.which(kubectl):
        return [Check(section, "pods", SKIP, "no cluster reachable (kubectl not installed)")]
    try:
        result = subprocess.run([kubectl, "get", "deploy,pods", "-n", namespace, "-o", "json",
                                 "--request-timeout=5s"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return [Check(section, "pods", SKIP, "no cluster reachable (kubectl timed out)")]
    if result.returncode != 0:
        last = [l for l in result.stderr.strip().splitlines() if l.strip()][-1:] or ["kubectl failed"]
        return [Check(section, "pods", SKIP, f"no cluster reachable ({redact(last[0])})")]
    items = json.loads(result.stdout or "{}").get("items", [])
    deployments = [i for i in items if i.get("kind") == "Deployment"]
    if not deployments:
        return [Check(section, "pods", SKIP, f"cluster reachable, no Deployments in namespace {namespace}")]
    checks = []
    for d in deployments:
        name = d["metadata"]["name"]
        desired = d.get("spec", {}).get("replicas", 1)
        ready = d.get("status", {}).get("readyReplicas", 0) or 0
        checks.append(Check(section, f"deployment {name}", OK if ready >= desired else FAIL,
                            f"ready {ready}/{desired}"))
    for p in (i for i in items if i.get("kind") == "Pod"):
        name = p["metadata"]["name"]
        phase = p.get("status", {}).get("phase", "?")
        restarts = sum(c.get("restartCount", 0) for c in p.get("status", {}).get("containerStatuses") or [])
        bad = phase not in ("Running", "Succeeded") or restarts > max_restarts
        over = f" (> {max_restarts})" if restarts > max_restarts else ""
        checks.append(Check(section, f"pod {name}", FAIL if bad else OK, f"{phase}, restarts {restarts}{over}"))
    return checks


def check_broker(url: str, retry_delays_s, expect_consumers: set[str], max_dead: int) -> list[Check]:
    section = "broker"
    from shared import broker

    try:
        connection = broker.connect(url, client_name="workers-health")
    except broker.CONNECTION_ERRORS as exc:
        return [Check(section, "broker", FAIL, f"unreachable ({type(exc).__name__}: {redact(exc) or 'no answer'})")]
    try:
        rows, note = queue_rows(connection, url, retry_delays_s)
    finally:
        if connection.is_open:
            connection.close()
    checks = [Check(section, "broker", OK, "reachable" + (f"; {note}" if note else ""))]
    for r in rows:
        if not r["exists"]:
            checks.append(Check(section, f"queue {r['queue']}", FAIL, "missing: run `workers topology`"))
            continue
        problems = []
        if r["worker"] in expect_consumers and not r["consumers"]:
            problems.append("no consumer (worker down?)")
        if (r["dead"] or 0) > max_dead:
            problems.append(f"{r['dead']} dead letter(s) > --max-dead {max_dead}: "
                            f"inspect with `workers dlq list {r['worker']}`")
        # a dead-letter queue near its bound is about to drop dead letters, an unbounded one can fill
        # the broker's disk: both need an operator whatever --max-dead says
        if r["dead_warning"]:
            problems.append(r["dead_warning"])
        unacked = "?" if r["unacked"] is None else r["unacked"]
        detail = (f"ready={r['ready']} unacked={unacked} consumers={r['consumers']} "
                  f"retrying={r['retrying']} dead={r['dead']}{dead_used(r)}")
        checks.append(Check(section, f"queue {r['queue']}", FAIL if problems else OK,
                            detail + ("; " + "; ".join(problems) if problems else "")))
    return checks


def check_databases() -> list[Check]:
    import psycopg2

    from workers.ops import migrate
    from shared.config import database_url
    from workers.ops.preflight import database_name

    checks = []
    for domain in migrate.domains():
        url = database_url(domain, allow_plain=False)
        name = f"database {domain}"
        try:
            psycopg2.connect(url, connect_timeout=3).close()
            missing = migrate.pending(domain, url)
        except Exception as exc:
            checks.append(Check("databases", name, FAIL, f"unreachable ({redact(exc)})"))
            continue
        where = database_name(url)
        if missing:
            checks.append(Check("databases", name, FAIL, f"{where}: {len(missing)} pending migration(s) "
                                                         f"{', '.join(missing)}: run `workers migrate {domain}`"))
        else:
            checks.append(Check("databases", name, OK, f"{where}: reachable, migrated"))
    return checks


def check_storage() -> list[Check]:
    if not any(os.environ.get(k) for k in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY")):
        return [Check("storage", "storage", SKIP, "not configured (no S3_* environment)")]
    from workers.runtime.storage import Storage, StorageConfig

    cfg = StorageConfig.from_env()
    client = Storage(cfg, connect_timeout=3, read_timeout=5, attempts=1).client  # a check answers quickly
    try:
        client.head_bucket(Bucket=cfg.bucket)
    except Exception as exc:
        return [Check("storage", f"bucket {cfg.bucket}", FAIL, f"unreachable ({type(exc).__name__}: {redact(exc)})")]
    return [Check("storage", f"bucket {cfg.bucket}", OK, "reachable")]


# ---- report -------------------------------------------------------------------------------------

def render(checks: list[Check], now: datetime) -> tuple[str, bool]:
    healthy = not any(c.status == FAIL for c in checks)
    lines = [f"== Spotter infra health {now.isoformat(timespec='seconds')} on {socket.gethostname()} =="]
    section = None
    for c in checks:
        if c.section != section:
            section = c.section
            lines.append(f"[{section}]")
        lines.append(c.line())
    counts = {s: sum(c.status == s for c in checks) for s in (OK, FAIL, SKIP)}
    lines.append(f"== summary: {'HEALTHY' if healthy else 'UNHEALTHY'}: {counts[FAIL]} failed, "
                 f"{counts[OK]} ok, {counts[SKIP]} skipped ==")
    return "\n".join(lines) + "\n", healthy


def _consumers(value: str) -> set[str]:
    value = value.strip()
    if value == "all":
        return set(WORKERS)
    if value in ("none", ""):
        return set()
    chosen = {v.strip() for v in value.split(",") if v.strip()}
    unknown = sorted(chosen - set(WORKERS))
    if unknown:
        raise click.BadParameter(f"unknown worker(s) {unknown}; known: {sorted(WORKERS)}, or all / none")
    return chosen


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log", "log_path", default="infra-health.log", envvar="INFRA_HEALTH_LOG", show_default=True,
              help="Report file (env INFRA_HEALTH_LOG); overwritten unless --append.")
@click.option("--append", is_flag=True, help="Append this report to the file instead of replacing it.")
@click.option("--expect-consumers", default="all", envvar="HEALTH_EXPECT_CONSUMERS", show_default=True,
              help="Workers whose queue must have a consumer: all (the stack is meant to run), none "
                   "(report only, e.g. broker and databases up without workers), or a comma list.")
@click.option("--max-dead", default=0, show_default=True, envvar="HEALTH_MAX_DEAD",
              help="Dead letters a worker may have before it counts as unhealthy. Dead letters need an "
                   "operator (`workers dlq`), so by default any fails the check.")
@click.option("--max-restarts", default=5, show_default=True, help="Pod restarts above this are unhealthy.")
@click.option("--namespace", default="app", envvar="K8S_NAMESPACE", show_default=True,
              help="Kubernetes namespace of the Deployments.")
@click.option("--no-pods", is_flag=True, help="Skip the kubectl section.")
@click.option("--env-file", default=".env", show_default=True, envvar="SPOTTER_ENV_FILE",
              help="Environment file for development; ignored when missing.")
def main(log_path, append, expect_consumers, max_dead, max_restarts, namespace, no_pods, env_file) -> None:
    """Check pods, broker, databases and storage; write a report; exit 0 healthy, 1 unhealthy.

    Reads the same environment as the workers: RABBITMQ_URL (and RABBITMQ_MANAGEMENT_URL),
    <DOMAIN>_DATABASE_URL per database, S3_*. The pods section needs kubectl reaching a
    cluster and is skipped with a note otherwise; storage is skipped without S3_* settings."""
    from dotenv import load_dotenv

    from shared.config import Config
    from shared.logging import setup_logging

    if env_file and os.path.isfile(env_file):
        load_dotenv(env_file, override=False)
    # the report is the answer on stdout; library warnings and a crash: JSON lines on stderr
    setup_logging("pod-health-check", os.environ.get("LOG_LEVEL") or "INFO", to_stderr=True)
    expected = _consumers(expect_consumers)
    now = datetime.now(timezone.utc)
    config = Config.from_env()
    checks = ([Check("pods", "pods", SKIP, "--no-pods")] if no_pods else check_pods(namespace, max_restarts))
    checks += check_broker(config.rabbitmq_url, config.retry_delays_s, expected, max_dead)
    checks += check_databases()
    checks += check_storage()
    text, healthy = render(checks, now)
    with open(log_path, "a" if append else "w") as f:
        f.write(text)
    click.echo(text, nl=False)
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
