"""The chaos run's pure parts (tests/chaos): the seeded workload and schedule, and the verdict."""
from __future__ import annotations

from collections import Counter

import pytest

from shared import contracts
from tests.chaos import nemesis
from tests.chaos.brokers import disk_argument, memory_argument
from tests.chaos.ledger import CONFIRMED, REFUSED_SEND, UNCONFIRMED, UNSENT, Ledger, tally
from tests.chaos.workload import DEAD, DIRECT, EFFECT, INGRESS, REFUSED, WORKERS, plan

TS = "2026-12-07T22:00:00Z"
TARGETS = {kind: ["a#0", "a#1"] for kind in nemesis.KINDS}


def test_the_same_seed_plans_the_same_events_and_another_seed_others():
    assert plan(7, 500, TS) == plan(7, 500, TS)
    assert [p.id for p in plan(7, 500, TS)] != [p.id for p in plan(8, 500, TS)]


def test_the_workload_covers_every_worker_path_and_verdict_and_each_event_is_schema_valid_or_meant_not_to_be():
    plans = plan(3, 1000, TS)
    assert {p.worker for p in plans} == set(WORKERS)
    assert {p.path for p in plans} == {INGRESS, DIRECT}
    for worker in WORKERS:  # one of each rejection early, whatever the seed
        assert {p.expect for p in plans if p.worker == worker} == {EFFECT, DEAD, REFUSED}
    assert len({p.id for p in plans}) == len({p.key for p in plans}) == 1000
    for p in plans:
        if p.worker == "settings" and p.expect == DEAD:
            assert p.path == DIRECT  # the ingress would refuse it itself
            with pytest.raises(Exception):
                contracts.validate(p.event)
        else:  # schema-valid: the ingress publishes it; only the worker refuses the DEAD ones
            contracts.validate(p.event)
        if p.expect == REFUSED:
            assert p.path == INGRESS


def test_the_schedule_is_seeded_spans_the_window_and_has_every_kind_once_before_repeats():
    faults = nemesis.schedule(11, 40, 10, TARGETS)
    assert faults == nemesis.schedule(11, 40, 10, TARGETS)
    assert faults != nemesis.schedule(12, 40, 10, TARGETS)
    assert {f.kind for f in faults} == set(nemesis.KINDS)
    assert all(2 <= f.at_s <= 36 and 1 <= f.duration_s <= 4 for f in faults)
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    assert nemesis.schedule(11, 40, 0, TARGETS) == []


@pytest.mark.parametrize("printed, argv", [("0.4\n", ["0.4"]), ("{absolute,1073741824}", ["absolute", "1073741824"])])
def test_a_watermark_is_restored_as_it_was_read(printed, argv):
    assert memory_argument(printed) == argv


def test_a_disk_limit_is_restored_as_it_was_read_and_nothing_unknown_is_restored():
    assert disk_argument("50000000\n") == ["50000000"]
    assert disk_argument("{mem_relative,1.5}") == ["mem_relative", "1.5"]
    with pytest.raises(ValueError):
        memory_argument("{badrpc,nodedown}")


def _ledger(sends: dict) -> Ledger:
    ledger = Ledger()
    for event_id, results in sends.items():
        for r in results:
            ledger.record(event_id, r)
    return ledger


def test_confirmed_needs_exactly_one_effect_unconfirmed_at_most_one_refused_none():
    plans = [p for p in plan(5, 200, TS) if p.expect == EFFECT and p.worker == "settings"][:4]
    a, b, c, d = (p.id for p in plans)
    ledger = _ledger({a: [UNCONFIRMED, CONFIRMED], b: [UNCONFIRMED], c: [REFUSED_SEND], d: [UNSENT, CONFIRMED]})
    clean = tally(plans, ledger, {a: 1, d: 1}, Counter(), set())
    assert (clean.confirmed, clean.unconfirmed, clean.refused, clean.ok) == (2, 1, 1, True)
    assert tally(plans, ledger, {a: 1, b: 1, d: 1}, Counter(), set()).ok  # an unconfirmed one may land
    lost = tally(plans, ledger, {d: 1}, Counter(), set())
    assert (lost.lost, lost.ok) == (1, False)
    leaked = tally(plans, ledger, {a: 1, c: 1, d: 1}, Counter(), set())
    assert (leaked.unexpected, leaked.ok) == (1, False)
    assert tally(plans, ledger, {a: 2, d: 1}, Counter(), set()).doubled == 1


def test_only_the_events_sent_to_be_rejected_may_be_dead_lettered_once_per_copy_sent():
    plans = plan(5, 200, TS)
    dead = [p for p in plans if p.expect == DEAD][:2]
    fine = next(p for p in plans if p.expect == EFFECT)
    ledger = _ledger({dead[0].id: [CONFIRMED], dead[1].id: [UNCONFIRMED, CONFIRMED], fine.id: [CONFIRMED]})
    subset = [*dead, fine]
    ok = tally(subset, ledger, {fine.id: 1}, Counter({dead[0].id: 1, dead[1].id: 2}), set())
    assert (ok.dead, ok.ok) == (2, True)
    assert tally(subset, ledger, {fine.id: 1}, Counter({dead[1].id: 1}), set()).lost == 1
    twice = tally(subset, ledger, {fine.id: 1}, Counter({dead[0].id: 2, dead[1].id: 1}), set())
    assert (twice.dead_dup, twice.ok) == (1, True)  # at-least-once dead-lettering: counted, not failed
    stray = tally(subset, ledger, {fine.id: 1}, Counter({dead[0].id: 1, dead[1].id: 1, fine.id: 1, "x": 1}), set())
    assert (stray.unexpected, stray.ok) == (2, False)


def test_an_applied_event_whose_outcome_was_never_relayed_fails_the_run_and_the_line_names_every_count():
    p = next(p for p in plan(5, 200, TS) if p.expect == EFFECT and p.worker == "dm")
    ledger = _ledger({p.id: [CONFIRMED]})
    missing = tally([p], ledger, {p.id: 1}, Counter(), set(), outcome_ids={p.id: "o"})
    assert (missing.outcomes_missing, missing.ok) == (1, False)
    summary = tally([p], ledger, {p.id: 1}, Counter(), {"o"}, outcome_ids={p.id: "o"})
    summary.faults.update(["kill", "kill", "cut"])
    summary.seconds = 2
    line = summary.line(seed=9)
    assert line.startswith("events=1 confirmed=1 lost=0 doubled=0 unexpected=0 dead=0 faults=3 ")
    assert "kinds=cut:1,kill:2" in line and line.endswith("seed=9") and summary.ok
