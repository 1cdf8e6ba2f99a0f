"""DeferredLines: the ingress's request lines, written in groups a fraction of a second late."""
from __future__ import annotations

import json
import subprocess
import sys
import time

SCRIPT = """
import sys, time
from shared.logging import DeferredLines, setup_logging
setup_logging("test")
lines = DeferredLines(interval_s=0.2)
for i in range(int(sys.argv[1])):
    lines.write("info", "request", {"n": i, "authorization": "Bearer secret-token"})
lines.write("debug", "request", {"n": -1})  # below the level: never written
print("written", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _run(count: int, linger_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(count), str(linger_s)],
                            stdout=subprocess.PIPE, text=True)


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_lines_appear_within_the_interval_while_the_process_runs():
    proc = _run(5, 30)
    try:
        assert proc.stdout.readline() == "written\n"
        started = time.monotonic()
        got = [json.loads(proc.stdout.readline()) for _ in range(5)]
        assert time.monotonic() - started < 2
    finally:
        proc.kill()
    assert [r["n"] for r in got] == [0, 1, 2, 3, 4]
    assert all(r["msg"] == "request" and r["service"] == "test" and r["authorization"] == "[redacted]" for r in got)


def test_a_normal_exit_writes_every_line_in_order():
    out, _ = _run(20_000, 0).communicate(timeout=60)  # several 64 KiB groups, then the rest at exit
    assert [r["n"] for r in _records(out)] == list(range(20_000))
    assert "secret-token" not in out
