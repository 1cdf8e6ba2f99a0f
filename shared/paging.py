"""Keyset pagination on (timestamp, id): an opaque cursor that keeps its place while rows arrive.

A page query has an `{after}` slot for the keyset condition (using %(ts)s and %(id)s) and a
`LIMIT %(limit)s`; one row more than asked says whether another page follows.
"""
from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timezone

from shared.errors import InvalidEvent


def page(cur, sql: str, after: str, args: dict, params: dict, ts_index: int = 5,
         id_index: int = 0) -> tuple[list, str | None]:
    """One page: its rows and the cursor of the next page, if there is one."""
    limit = params["limit"]
    cursor = params.get("cursor")
    if cursor:
        args = {**args, **decode_cursor(cursor)}
    cur.execute(sql.format(after=after if cursor else ""), {**args, "limit": limit + 1})
    rows = cur.fetchall()
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1][ts_index], rows[-1][id_index])


def encode_cursor(ts: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{ts.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, row_id = raw.split("|")
        when = datetime.fromisoformat(ts)
        when.astimezone(timezone.utc)  # a forged zone can push year 9999 past what PostgreSQL takes
        return {"ts": when, "id": str(uuid.UUID(row_id))}
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidEvent("cursor is not one this API gave out", field="cursor") from None
