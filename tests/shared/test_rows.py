"""The handler cursor (shared/handler.Cursor): buffered writes land in order, and a declared
multi-row statement (WorkerSpec.batched) stores exactly what its single-row form would."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg2

from workers.runtime.handler import Cursor

SINGLE = "INSERT INTO t (id, amount, note, at, n) VALUES (%s::uuid, %s::numeric, %s, %s::timestamptz, %s::integer)"
MANY = ("INSERT INTO t (id, amount, note, at, n) SELECT (r->>0)::uuid, (r->>1)::numeric, r->>2, "
        "(r->>3)::timestamptz, (r->>4)::integer FROM jsonb_array_elements(%s::jsonb) AS r")


def _table(url):
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id uuid PRIMARY KEY, amount numeric(9, 2), note text, at timestamptz, n integer)")
    conn.commit()
    return conn


def test_values_of_every_kind_round_trip_through_the_batched_form(make_database):
    conn = _table(make_database("settings"))
    at = datetime(2025, 11, 5, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    rows = [(str(uuid.uuid4()), 93.55, "it's \"quoted\" \\ back\nslash, ünïcode, 💪", at, 7),
            (str(uuid.uuid4()), 0.1, None, None, None),
            (str(uuid.uuid4()), 1e-2, "%s %(x)s", at, -2147483648)]
    cur = Cursor(conn, {SINGLE: MANY})
    for row in rows:
        cur.execute(SINGLE, row)
    cur.execute("SELECT id::text, amount, note, at, n FROM t")  # a read sends the buffer first
    stored = {r[0]: r[1:] for r in cur.fetchall()}
    assert stored[rows[0][0]] == (Decimal("93.55"), rows[0][2], at, 7)
    assert stored[rows[1][0]] == (Decimal("0.10"), None, None, None)
    assert stored[rows[2][0]] == (Decimal("0.01"), "%s %(x)s", at, -2147483648)
    conn.close()


def test_values_json_cannot_carry_take_the_single_row_form(make_database):
    conn = _table(make_database("settings"))
    cur = Cursor(conn, {SINGLE: MANY})
    cur.execute(SINGLE, (str(uuid.uuid4()), Decimal("12.34"), "decimal", None, 1))
    cur.execute("SELECT amount, note FROM t")
    assert cur.fetchall() == [(Decimal("12.34"), "decimal")]
    conn.close()


def test_buffered_writes_keep_their_order_and_rowcount(make_database):
    conn = _table(make_database("settings"))
    cur, key = Cursor(conn), str(uuid.uuid4())
    cur.execute(SINGLE, (key, 1, "first", None, 1))
    cur.execute("UPDATE t SET note = 'second' WHERE id = %s", (key,))
    cur.execute("UPDATE t SET n = n + 1 WHERE id <> %s", (key,))
    assert cur.rowcount == 0  # the last statement's, as a plain cursor says
    cur.execute("SELECT note, n FROM t")
    assert cur.fetchone() == ("second", 1)
    conn.close()
