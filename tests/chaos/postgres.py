"""The machine's PostgreSQL, stopped the hard way and started again (the `pg_restart` fault),
and the run's throwaway databases on it."""
from __future__ import annotations

import os
import subprocess
import time

import psycopg2

from workers.ops import migrate

SERVER = "postgresql://postgres@127.0.0.1:5432/"


def version() -> str:
    """The one cluster version this machine has (/etc/postgresql/<version>/main)."""
    versions = sorted(os.listdir("/etc/postgresql"))
    if len(versions) != 1:
        raise RuntimeError(f"expected one PostgreSQL version in /etc/postgresql, found {versions}")
    return versions[0]


def _ctl(action: str, *extra: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version(), "main", action, *extra],
                   check=True, capture_output=True, timeout=120)


def answering() -> bool:
    try:
        psycopg2.connect(SERVER + "postgres", connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


def restart_immediate():
    """Stop with `-m immediate` (no checkpoint, every backend killed: a crash); returns the start."""
    _ctl("stop", "-m", "immediate")
    return start


def start() -> None:
    """Start it unless it answers; wait until it does (crash recovery takes a moment)."""
    if not answering():
        try:
            _ctl("start")
        except subprocess.CalledProcessError:
            pass  # started meanwhile, or still shutting down: the wait below tells
    deadline = time.monotonic() + 60
    while not answering():
        if time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not come back within 60 s")
        time.sleep(0.2)


def create(domain: str, name: str) -> str:
    url = SERVER + name
    migrate.ensure_database(url)
    migrate.apply(domain, url)
    return url


def drop(name: str) -> None:
    admin = psycopg2.connect(SERVER + "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
