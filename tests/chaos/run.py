"""One chaos run: stack up, publish the seeded workload while the nemesis works, heal, drain,
count, and one summary line on stdout (progress and problems as JSON lines on stderr).

    python -m tests.chaos [--events N] [--seconds S] [--seed X] [--replicas K] [--faults F]
                          [--cluster 3] [--no-faults]

Exit 0 when nothing was lost, applied twice or dead-lettered unexpectedly; 1 otherwise; 2 when
the run itself could not be made. Whatever happens (Ctrl-C and SIGTERM included) the broker's
app runs again with its limits as found, PostgreSQL runs, the vhost and databases are dropped
and no process of the run is left."""
from __future__ import annotations

import argparse
import logging
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from shared.envelope import rfc3339
from shared.logging import log, setup_logging
from tests.chaos import effects, nemesis, postgres
from tests.chaos.brokers import ClusterBroker, LocalBroker
from tests.chaos.ledger import Ledger, Summary, tally
from tests.chaos.publishers import publish, sender_factory
from tests.chaos.stack import RETRY_DELAYS_S, TAP, Stack
from tests.chaos.workload import DIRECT, INGRESS, fixtures, plan


@dataclass
class Options:
    events: int = 2000
    seconds: float | None = None      # default: events / 250, at least 20
    seed: int | None = None           # default: a random one, printed
    replicas: int = 2
    faults: int | None = None         # default: one per 4 s, at least one of each kind
    cluster: int = 0                  # 0: the machine's broker; 3: a three-node cluster
    no_faults: bool = False
    drain_timeout_s: float = 240.0
    senders: tuple[int, int] = (4, 2)  # threads posting to the ingress, publishing straight

    def resolved(self) -> "Options":
        seconds = self.seconds or max(20.0, self.events / 250)
        return Options(self.events, seconds, self.seed if self.seed is not None else random.randrange(10**6),
                       self.replicas, self.faults, self.cluster, self.no_faults, self.drain_timeout_s, self.senders)


class Hang(Exception):
    """The system did not drain in time: what still waited is in the message."""


def run(opts: Options) -> tuple[Summary, Path]:
    opts = opts.resolved()
    logdir = Path(tempfile.mkdtemp(prefix=f"chaos-{opts.seed}-"))
    broker = ClusterBroker(opts.cluster) if opts.cluster else LocalBroker()
    stopping = threading.Event()
    stack = nem = None
    try:
        postgres.start()
        broker.start()
        plans = plan(opts.seed, opts.events, rfc3339(datetime.now(timezone.utc) - timedelta(seconds=1)))
        stack = Stack(broker, opts.replicas, logdir)  # named before up(): a failed start is undone too
        stack.up(fixtures(opts.seed))
        targets = stack.targets()
        count = opts.faults if opts.faults is not None else max(len(targets), round(opts.seconds / 4))
        faults = [] if opts.no_faults else nemesis.schedule(opts.seed, opts.seconds, count, targets)
        log.bind(seed=opts.seed, events=opts.events, seconds=opts.seconds, faults=[str(f) for f in faults],
                 logs=str(logdir)).info("chaos run starting")
        nem = nemesis.Nemesis(faults, stack)
        ledger = Ledger()
        t0 = time.monotonic()
        nem.start(t0)
        publish(plans, ledger, sender_factory(stack.port, stack.jwt_secret, broker.url(stack.vhost).split(",")),
                opts.seconds, t0, stopping, {INGRESS: opts.senders[0], DIRECT: opts.senders[1]})
        log.bind(after_s=round(time.monotonic() - t0, 1)).info("every event sent")
        nem.join()
        _heal(broker, stack)
        hang = None
        try:
            _drain(stack, broker, opts.drain_timeout_s)
        except Hang as exc:
            hang = str(exc)
        elapsed = time.monotonic() - t0
        dead, reasons = effects.dead_letters(stack.url)
        seen = {p.message_id for p in effects.take_all(stack.url, TAP)}
        summary = tally(plans, ledger, effects.effect_rows(stack.db_urls, plans), dead, seen,
                        drift=effects.drift(stack.db_urls), outcome_ids=effects.expected_outcomes(plans))
        summary.seconds = elapsed
        summary.faults.update(d.fault.kind for d in nem.done if d.error is None)
        summary.problems += [f"fault failed: {d.fault}: {d.error}" for d in nem.done if d.error]
        summary.problems += [f"crash: {c}" for c in stack.crashes]
        summary.crashes = len(stack.crashes)
        if hang:
            summary.hang = hang
        log.bind(dead_letters={f"{w}/{r}": n for (w, r), n in sorted(reasons.items())}).info("dead letters")
        return summary, logdir
    finally:
        stopping.set()
        if nem is not None:
            nem.stop()
            nem.join(120)
        for step in (lambda: _heal(broker, stack), lambda: stack and stack.down(), broker.stop):
            try:
                step()
            except Exception as exc:
                log.error("could not restore after the run", error=f"{type(exc).__name__}: {exc}")


def _heal(broker, stack) -> None:
    broker.heal()
    postgres.start()
    if stack is not None:
        stack.heal()


def _drain(stack: Stack, broker, timeout_s: float) -> None:
    """Until the workers' queues are empty (ready and unacknowledged), every outbox is relayed and
    every replica runs, twice in a row."""
    delays = [int(d) for d in RETRY_DELAYS_S.split(",")]
    deadline, calm, waiting = time.monotonic() + timeout_s, 0, {}
    while calm < 2:
        if time.monotonic() > deadline:
            raise Hang(f"not drained after {timeout_s:.0f} s: {waiting}")
        try:
            waiting = effects.pending(broker.queue_depths(stack.vhost), delays)
            backlog = effects.outbox_backlog(stack.db_urls)
        except Exception as exc:  # a node or the database still coming back
            waiting, backlog = {"error": f"{type(exc).__name__}: {exc}"}, 0
        if backlog:
            waiting["outbox"] = backlog
        if not stack.replicas_alive():
            waiting["replicas"] = "not all running"
        calm = calm + 1 if not waiting else 0
        time.sleep(1)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: the finally blocks restore the machine


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bin/chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=Options.events)
    parser.add_argument("--seconds", type=float, default=None, help="how long events are sent, faults injected")
    parser.add_argument("--seed", type=int, default=None, help="replays the same events and faults")
    parser.add_argument("--replicas", type=int, default=Options.replicas, help="replicas of each worker")
    parser.add_argument("--faults", type=int, default=None, help="how many faults (default: one per 4 s)")
    parser.add_argument("--cluster", type=int, default=0, choices=(0, 3), help="3: a three-node RabbitMQ cluster")
    parser.add_argument("--no-faults", action="store_true", help="the same run without a nemesis (a baseline)")
    args = parser.parse_args(argv)
    setup_logging("chaos", "INFO", to_stderr=True)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # a publisher's failed reconnects are expected here
    signal.signal(signal.SIGTERM, _interrupt)
    opts = Options(events=args.events, seconds=args.seconds, seed=args.seed, replicas=args.replicas,
                   faults=args.faults, cluster=args.cluster, no_faults=args.no_faults).resolved()
    try:
        summary, logdir = run(opts)
    except KeyboardInterrupt:
        print(f"interrupted seed={opts.seed}", flush=True)
        return 130
    print(summary.line(opts.seed), flush=True)
    for problem in summary.problems:
        log.bind(seed=opts.seed).error(problem)
    if summary.ok:
        shutil.rmtree(logdir, ignore_errors=True)
        return 0
    log.bind(logs=str(logdir)).error("chaos run failed: the processes' logs are kept")
    return 1
