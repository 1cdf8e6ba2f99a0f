"""PostgreSQL as a test reads it: plain queries on a URL, and waiting for a worker's commits."""
from __future__ import annotations

import os

import psycopg2

from tests.support.rabbit import wait_for

# the server the integration and end-to-end tiers create their throwaway databases on
PG = os.environ.get("SPOTTER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/")


def query(url: str, sql: str, params=()):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.commit()
        conn.close()


def drop_database(name: str) -> None:
    admin = psycopg2.connect(PG + "postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def processed(db: str, *events: dict, timeout: float = 20) -> None:
    """Wait until the worker on `db` committed these events (their idempotency keys are in)."""
    ids = [e["client_generated_id"] for e in events]
    wait_for(lambda: query(db, "SELECT count(*) FROM idempotency_keys WHERE client_generated_id = ANY(%s::uuid[])",
                           (ids,))[0][0] == len(set(ids)), timeout=timeout, message=f"{len(ids)} event(s) processed")
