"""PostgreSQL connections and how to read their failures."""
from __future__ import annotations

import psycopg2
import psycopg2.extensions

# SQLSTATE classes worth another try: serialization/deadlock, lock busy, canceled, resources, connection.
_TRANSIENT_PREFIXES = ("40", "55P03", "57014", "53", "08", "57P")
# Bad data the database refused: retrying the same message cannot help.
_PERMANENT_PREFIXES = ("22", "23")

# Per transaction, not per session: behind PgBouncer (transaction pooling) a session setting or
# an `options` startup parameter would land on whichever server connection we get (or be
# refused). Sent ahead of a transaction's first statement, in the same round trip.
TIMEOUTS = "SET LOCAL statement_timeout = 30000; SET LOCAL lock_timeout = 10000"


def connect(url: str, application_name: str = "spotter") -> psycopg2.extensions.connection:
    conn = psycopg2.connect(
        url, connect_timeout=5, application_name=application_name,  # PgBouncer passes this one through
        # notice a dead peer within ~30 s instead of hanging on a half-open socket
        keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
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
