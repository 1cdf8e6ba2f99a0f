"""The nemesis: a seeded schedule of faults, and the thread that injects and heals them.

A fault is injected, held for its duration, then healed; one at a time, each at its scheduled
second (or at once, if the previous one healed late). The schedule (kinds, targets, times,
durations) is a pure function of the seed, so a failing run can be replayed."""
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
    """Runs a schedule on its own thread; `stop()` cuts the holds short and heals what is injected."""

    def __init__(self, faults: list[Fault], injector: Injector):
        self.faults, self.injector = faults, injector
        self.done: list[Done] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._t0 = 0.0

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        for fault in self.faults:
            if self._stopping.wait(max(0.0, self._t0 + fault.at_s - time.monotonic())):
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
