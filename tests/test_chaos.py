"""The chaos run, short (bin/chaos is the long one): 600 events for the four workers through the
ingress and straight to the exchange while every kind of fault is injected once, on a fixed seed.
Nothing confirmed may be lost, nothing applied twice, nothing dead-lettered that was not sent to
be (tests/chaos/run.py)."""
from __future__ import annotations

import shutil
import subprocess

from tests.chaos.run import Options, run


def test_a_short_seeded_chaos_run_loses_nothing_doubles_nothing_and_restores_the_machine():
    summary, logs = run(Options(events=600, seconds=30, seed=19, replicas=2, faults=7))
    assert summary.ok, f"{summary.line(19)}\n" + "\n".join(summary.problems) + f"\nlogs: {logs}"
    shutil.rmtree(logs, ignore_errors=True)
    assert sum(summary.faults.values()) == 7 and len(summary.faults) == 7, summary.faults  # one of each kind
    assert summary.dead >= 4 and summary.confirmed > 500
    # the machine as found: the broker's app running, no alarm
    assert subprocess.run(["rabbitmqctl", "-q", "eval", "rabbit_alarm:get_alarms()."], capture_output=True,
                          text=True, check=True).stdout.strip() == "[]"
    vhosts = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=True).stdout
    assert "chaos-" not in vhosts
