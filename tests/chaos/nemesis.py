"""The nemesis: a seeded schedule of faults, and the threads that inject and heal them.

A fault is injected at its second, held for its duration, then healed. Faults on different
things overlap (a replica killed while PostgreSQL restarts); faults on the same thing take turns
(`Fault.resource`): two alarms on one broker would each restore what the other set. The
schedule (kinds, targets, times, durations) is a pure function of the seed, so a failing run can
be replayed; a fault whose turn comes late starts late, and the log says when it ran."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from shared.logging import log

KILL, SIGTERM, BROKER_RESTART, PG_RESTART, CUT = "kill", "sigterm", "broker_restart", "pg_restart", "cut"
MEMORY_ALARM, DISK_ALARM, NODE_KILL, LEADER_KILL = "memory_alarm", "disk_alarm", "node_kill", "leader_kill"
KINDS = (KILL, SIGTERM, BROKER_RESTART, PG_RESTART, CUT, MEMORY_ALARM, DISK_ALARM)
CLUSTER_KINDS = (NODE_KILL, LEADER_KILL)


@dataclass(frozen=True)
class Fault:
    at_s: float        # seconds after the run's start
    kind: str
    target: str        # a replica ("dm#1"), a link ("dm/pg", "ingress/amqp"), a node ("1"), a queue ("dm")
    duration_s: float  # how long it is held before healing

    @property
    def resource(self) -> str:
        """What it acts on, one fault at a time: a replica, a link, PostgreSQL or the broker."""
        if self.kind in (KILL, SIGTERM, CUT):
            return f"{self.kind == CUT and 'link' or 'replica'}:{self.target}"
        return "postgresql" if self.kind == PG_RESTART else "broker"

    def __str__(self) -> str:
        return f"{self.kind}({self.target}) at {self.at_s:.1f}s for {self.duration_s:.1f}s"


def schedule(seed: int, seconds: float, count: int, targets: dict[str, list[str]]) -> list[Fault]:
    """`count` faults between 5 % and 90 % of `seconds`; every kind of `targets` (kind → what
    it may hit) once before any repeats, when `count` allows."""
    rng = random.Random(f"faults/{seed}")
    kinds = sorted(targets)
    if count <= 0 or not kinds:
        return []
    chosen = rng.sample(kinds, len(kinds))[:count] + [rng.choice(kinds) for _ in range(count - len(kinds))]
    rng.shuffle(chosen)
    times = sorted(rng.uniform(0.05 * seconds, 0.9 * seconds) for _ in chosen)
    return [Fault(round(at, 2), kind, rng.choice(sorted(targets[kind])), round(rng.uniform(1.0, 4.0), 2))
            for at, kind in zip(times, chosen)]


class Injector(Protocol):
    def inject(self, fault: Fault) -> Callable[[], None]:
        """Inject the fault now; return what heals it."""


@dataclass
class Done:
    fault: Fault
    started_s: float
    healed_s: float
    error: str | None = None


class Nemesis:
    """Runs a schedule, a thread per fault; `stop()` cuts the waits and holds short, and every
    injected fault is healed before its thread ends."""

    def __init__(self, faults: list[Fault], injector: Injector):
        self.faults, self.injector = faults, injector
        self.done: list[Done] = []
        self._stopping = threading.Event()
        self._locks = {f.resource: threading.Lock() for f in faults}
        self._threads = [threading.Thread(target=self._run, args=(f,), name=f"nemesis-{i}", daemon=True)
                         for i, f in enumerate(faults)]
        self._t0 = 0.0

    def start(self, t0: float) -> None:
        self._t0 = t0
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _run(self, fault: Fault) -> None:
        if self._stopping.wait(max(0.0, self._t0 + fault.at_s - time.monotonic())):
            return
        with self._locks[fault.resource]:
            if self._stopping.is_set():
                return
            started = time.monotonic() - self._t0
            error = None
            try:
                heal = self.injector.inject(fault)
            except Exception as exc:  # noted, and the run goes on: the summary names it
                heal, error = None, f"inject: {type(exc).__name__}: {exc}"
            if heal is not None:
                self._stopping.wait(fault.duration_s)
                try:
                    heal()
                except Exception as exc:
                    error = f"heal: {type(exc).__name__}: {exc}"
            done = Done(fault, round(started, 2), round(time.monotonic() - self._t0, 2), error)
        self.done.append(done)
        log.bind(fault=str(fault), started_s=done.started_s, healed_s=done.healed_s, error=error).info(
            "fault healed" if error is None else "fault failed")
