"""What was sent, what came of each send, and the verdict per event once the system drained.

    confirmed   (a 202, or the broker's ack) → exactly one effect
    unconfirmed (503, timeout, connection lost, nack: the confirm never came) → zero or one
    refused     (the ingress answered 4xx, the broker returned it unroutable, or it never left
                 the publisher for want of a connection) → zero

A publisher re-sends an unconfirmed event (as the offline client does) until it is confirmed or
refused: an event is confirmed if any send was. Events that must be dead-lettered are counted
in their dead-letter queue instead: confirmed → there; each copy that may have reached the
broker → at most one dead letter (a re-sent copy is dead-lettered again: no idempotency key is
kept for a refused event; and a connection lost between forwarding a dead letter and acking
its original redelivers the original: `dead_dup`, reported, not a failure)."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from tests.chaos.workload import DEAD, EFFECT, OUTCOMES, REFUSED, Planned

CONFIRMED, UNCONFIRMED, REFUSED_SEND = "confirmed", "unconfirmed", "refused"
UNSENT = "unsent"  # no connection to send on: nothing left the publisher


class Ledger:
    """Every send's result, per event id; thread-safe (publishers record concurrently)."""

    def __init__(self):
        self._sends: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def record(self, event_id: str, result: str) -> None:
        with self._lock:
            self._sends.setdefault(event_id, []).append(result)

    def sends(self, event_id: str) -> list[str]:
        with self._lock:
            return list(self._sends.get(event_id, ()))

    def status(self, event_id: str) -> str:
        return status_of(self.sends(event_id))


def status_of(sends: list[str]) -> str:
    if CONFIRMED in sends:
        return CONFIRMED
    if UNCONFIRMED in sends:
        return UNCONFIRMED
    return REFUSED_SEND  # refused, or never sent: it reached no queue


@dataclass
class Summary:
    events: int = 0
    confirmed: int = 0
    unconfirmed: int = 0
    resent: int = 0            # events sent more than once (an earlier send unconfirmed or unsent)
    refused: int = 0
    lost: int = 0
    doubled: int = 0
    unexpected: int = 0
    dead: int = 0
    dead_dup: int = 0
    outcomes_missing: int = 0
    drift: int = 0             # a counter that disagrees with the rows it counts
    faults: Counter = field(default_factory=Counter)
    seconds: float = 0.0       # first send until drained
    crashes: int = 0           # replicas that exited without the nemesis asking (restarted)
    hang: str | None = None    # what had not drained in time
    problems: list[str] = field(default_factory=list)  # the first few, named

    @property
    def ok(self) -> bool:
        # dead_dup is reported, not failed on: dead-lettering is at-least-once. A dead letter is
        # forwarded (confirmed), then its original acked; a connection lost in between redelivers
        # the original, and it is dead-lettered again (harmless: a replay is deduplicated).
        return not (self.lost or self.doubled or self.unexpected or self.outcomes_missing or self.drift
                    or self.hang)

    def line(self, seed: int | None = None) -> str:
        kinds = ",".join(f"{k}:{n}" for k, n in sorted(self.faults.items())) or "none"
        rate = self.events / self.seconds if self.seconds else 0.0
        return (f"events={self.events} confirmed={self.confirmed} lost={self.lost} doubled={self.doubled} "
                f"unexpected={self.unexpected} dead={self.dead} faults={sum(self.faults.values())} "
                f"unconfirmed={self.unconfirmed} refused={self.refused} resent={self.resent} dead_dup={self.dead_dup} "
                f"outcomes_missing={self.outcomes_missing} drift={self.drift} crashes={self.crashes} "
                f"drained={'no' if self.hang else 'yes'} kinds={kinds} seconds={self.seconds:.1f} events/s={rate:.0f}" + (f" seed={seed}" if seed is not None else ""))


def tally(plans: list[Planned], ledger: Ledger, effects: dict[str, int], dead: Counter, outcomes_seen: set[str],
          drift: int = 0, outcome_ids: dict[str, str] | None = None) -> Summary:
    """The verdict. `effects`: effect rows per event id; `dead`: dead letters per message id (of
    every worker's dead-letter queue); `outcomes_seen`: ids of the outcome events relayed;
    `outcome_ids`: event id → the id of its outcome event (events whose worker emits one)."""
    s = Summary(events=len(plans), drift=drift)
    planned = {p.id for p in plans}
    outcome_ids = outcome_ids or {}

    def problem(kind: str, p: Planned, detail: str) -> None:
        if len(s.problems) < 20:
            s.problems.append(f"{kind}: {p.worker} {p.event['event_type']} {p.id} ({detail})")

    for p in plans:
        sends = ledger.sends(p.id)
        status = status_of(sends)
        setattr(s, status, getattr(s, status) + 1)
        s.resent += len(sends) > 1
        may_have_arrived = sum(r in (CONFIRMED, UNCONFIRMED) for r in sends)
        rows, letters = effects.get(p.id, 0), dead.get(p.id, 0)
        if rows > 1:
            s.doubled += 1
            problem("doubled", p, f"{rows} effect rows")
        if p.expect == EFFECT:
            if status == CONFIRMED and rows == 0:
                s.lost += 1
                problem("lost", p, f"sends {sends}")
            elif status == REFUSED_SEND and rows:
                s.unexpected += 1
                problem("applied though refused", p, f"sends {sends}")
            if letters:
                s.unexpected += letters
                problem("unexpected dead letter", p, f"{letters} in {p.worker}.dead")
            if rows and p.id in outcome_ids and outcome_ids[p.id] not in outcomes_seen:
                s.outcomes_missing += 1
                problem("outcome never relayed", p, OUTCOMES[p.worker])
        elif p.expect == REFUSED:
            if rows or status == CONFIRMED or letters:
                s.unexpected += 1
                problem("a wrong token got through", p, f"sends {sends}, {rows} rows, {letters} dead")
        elif p.expect == DEAD:
            if rows:
                s.unexpected += 1
                problem("applied though it must be refused", p, f"{rows} rows")
            if letters:
                s.dead += 1
            if status == CONFIRMED and letters == 0:
                s.lost += 1
                problem("lost (neither applied nor dead-lettered)", p, f"sends {sends}")
            elif letters > max(may_have_arrived, 1 if status == CONFIRMED else 0):
                s.dead_dup += letters - may_have_arrived
                problem("dead-lettered more often than sent", p, f"{letters} dead letters, sends {sends}")
    strangers = {i: n for i, n in dead.items() if i not in planned}
    if strangers:
        s.unexpected += sum(strangers.values())
        s.problems.append(f"dead letters of no planned event: {sorted(strangers)[:5]}")
    return s
