"""Batched rows (shared/db.execute_rows) land exactly as psycopg2 would have sent them."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg2

from workers.runtime import db

SQL = "INSERT INTO t (id, amount, note, at, n) SELECT * FROM (VALUES %s) AS v RETURNING id::text"
TEMPLATE = "(%s::uuid, %s::numeric, %s, %s::timestamptz, %s::integer)"


def _table(url):
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id uuid PRIMARY KEY, amount numeric(9, 2), note text, at timestamptz, n integer)")
    conn.commit()
    return conn


def test_values_of_every_kind_round_trip(make_database):
    conn = _table(make_database("settings"))
    at = datetime(2025, 11, 5, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    rows = [(str(uuid.uuid4()), 93.55, "it's \"quoted\" \\ back\nslash, ünïcode, 💪", at, 7),
            (str(uuid.uuid4()), 0.1, None, None, None),
            (str(uuid.uuid4()), 1e-2, "%s %(x)s", at, -2147483648)]
    with conn.cursor() as cur:
        returned = db.execute_rows(cur, SQL, TEMPLATE, rows, fetch=True)
        cur.execute("SELECT id::text, amount, note, at, n FROM t")
        stored = {r[0]: r[1:] for r in cur.fetchall()}
    assert sorted(r[0] for r in returned) == sorted(r[0] for r in rows)
    assert stored[rows[0][0]] == (Decimal("93.55"), rows[0][2], at, 7)
    assert stored[rows[1][0]] == (Decimal("0.10"), None, None, None)
    assert stored[rows[2][0]] == (Decimal("0.01"), "%s %(x)s", at, -2147483648)
    conn.close()


def test_values_json_cannot_carry_take_the_plain_path(make_database):
    conn = _table(make_database("settings"))
    row = (str(uuid.uuid4()), Decimal("12.34"), "decimal", None, 1)
    with conn.cursor() as cur:
        db.execute_rows(cur, SQL, TEMPLATE, [row])
        cur.execute("SELECT amount, note FROM t")
        assert cur.fetchall() == [(Decimal("12.34"), "decimal")]
    conn.close()
