"""The chaos run (issue 19): `bin/chaos` publishes a seeded workload while a nemesis injects
faults, then heals, drains and counts every event's effects (tests/chaos/run.py)."""
