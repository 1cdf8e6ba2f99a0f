"""Operator tools: the `workers` CLI (cli.py), the start-up preflight, migrations, dead-letter
tooling, the pod health check, and the local dev stack (devstack.py, devpage.py, localstorage.py)."""
