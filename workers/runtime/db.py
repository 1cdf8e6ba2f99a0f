"""PostgreSQL connections and how to read their failures."""
from __future__ import annotations

from functools import lru_cache

import orjson
import psycopg2
import psycopg2.extensions
from psycopg2.extras import execute_values

# SQLSTATE classes worth another try: serialization/deadlock, lock busy, canceled, resources, connection.
_TRANSIENT_PREFIXES = ("40", "55P03", "57014", "53", "08", "57P")
# Bad data the database refused: retrying the same message cannot help.
_PERMANENT_PREFIXES = ("22", "23")


def connect(url: str, application_name: str = "spotter") -> psycopg2.extensions.connection:
    conn = psycopg2.connect(
        url, connect_timeout=5, application_name=application_name,
        # notice a dead peer within ~30 s instead of hanging on a half-open socket
        keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        options="-c statement_timeout=30000 -c lock_timeout=10000",
    )
    conn.autocommit = False
    return conn


def is_unreachable(exc: BaseException, conn=None) -> bool:
    """The database itself is gone (not this message's fault): hold the work and reconnect."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if isinstance(exc, psycopg2.OperationalError):
        code = getattr(exc, "pgcode", None)
        return code is None or code.startswith(("08", "57P")) or bool(conn is not None and conn.closed)
    return False


def is_permanent(exc: BaseException) -> bool:
    code = getattr(exc, "pgcode", None) or ""
    return isinstance(exc, psycopg2.Error) and code.startswith(_PERMANENT_PREFIXES)


def is_transient(exc: BaseException) -> bool:
    code = getattr(exc, "pgcode", None) or ""
    return isinstance(exc, psycopg2.Error) and code.startswith(_TRANSIENT_PREFIXES)


@lru_cache(maxsize=None)
def _from_json(sql: str, template: str) -> str:
    """`… VALUES %s …` with a row template "(%s::uuid, %s, …)" → the same statement reading its
    rows from one JSON array: "… SELECT (r->>0)::uuid, (r->>1), … FROM jsonb_array_elements(%s::jsonb) AS r …"."""
    parts = template.strip()[1:-1].split("%s")
    columns = "".join(part + (f"(r->>{i})" if i < len(parts) - 1 else "") for i, part in enumerate(parts))
    return sql.replace("VALUES %s", f"SELECT {columns} FROM jsonb_array_elements(%s::jsonb) AS r", 1)


def execute_rows(cur, sql: str, template: str, rows: list[tuple], fetch: bool = False):
    """execute_values, with the rows sent as one JSON array: orjson serializes a batch in
    microseconds where psycopg2 would quote every value of every row in Python (the worker's
    largest cost per message). Values orjson cannot carry (bytes, Decimal) take the old way."""
    try:
        payload = orjson.dumps(rows).decode()
    except TypeError:
        return execute_values(cur, sql, rows, template=template, page_size=len(rows) or 1, fetch=fetch)
    cur.execute(_from_json(sql, template), (payload,))
    return cur.fetchall() if fetch else None
