"""When a reminder fires: the next occurrence of its schedule, pure computation (no I/O).

A schedule (validated by shared/schemas/events/reminder.set.json) is one of
  {"at": "2026-12-24T07:00:00Z"}  one-off: an RFC 3339 instant with Z or an offset;
  {"weekly": {"days_of_week": ["mon", ...], "local_time": "07:00", "timezone": "Europe/Berlin"}}
     local_time on the wall clock of an IANA zone, so 07:00 stays 07:00 across daylight-saving
     changes (Europe/Berlin: 06:00Z in winter, 05:00Z in summer).

Two wall-clock times need a rule:
- A time the clocks skip that day (spring forward: 02:30 on 2026-03-29 in Europe/Berlin, where
  02:00 CET jumps to 03:00 CEST) fires at the next valid instant, the one at which the clocks jump:
  2026-03-29T01:00:00Z (03:00 CEST). RFC 5545 (iCalendar) would instead shift it by the gap's length,
  to 03:30 CEST; we follow the issue's "next valid instant", so the reminder is never later than
  the first moment its time has passed.
- A time the clocks pass twice (fall back: 02:30 on 2026-10-25 in Europe/Berlin) fires once, at
  the first (earlier, fold=0) instant, 02:30 CEST = 00:30Z.

Every instant returned is an aware UTC datetime.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # in date.weekday() order
SHOWN = 64  # at most this many characters of a value go into an error message


class InvalidSchedule(ValueError):
    """A schedule the schema accepted but that cannot be computed, e.g. an unknown time zone."""


def check(schedule: dict) -> None:
    """Raise InvalidSchedule unless next_occurrence can compute `schedule` (before it is stored)."""
    if "at" in schedule:
        _instant(schedule["at"])
    else:
        _weekly(schedule["weekly"])


def next_occurrence(schedule: dict, after: datetime) -> datetime | None:
    """The first occurrence strictly after the aware `after` (any zone), in UTC; None when a one-off
    has passed."""
    if after.tzinfo is None:
        # astimezone would read a naive datetime as the machine's local time
        raise ValueError("after must be an aware datetime")
    if "at" in schedule:
        at = _instant(schedule["at"])
        return at if at > after else None
    days, wall, zone = _weekly(schedule["weekly"])
    first = after.astimezone(zone).date()
    # An occurrence falls on its own local day (or, for a skipped time, at the jump, never earlier),
    # so none before `first` can follow `after`; and first + 7, a day of the same weekday, begins
    # after `after`: 8 candidate days always suffice.
    for day in (first + timedelta(days=n) for n in range(8)):
        if day.weekday() in days:
            instant = _on(day, wall, zone)
            if instant > after:
                return instant
    raise AssertionError(f"no occurrence within 8 days of {after.isoformat()}")  # empty days_of_week


def _on(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of `wall` on `day` in `zone`: the first of two when the clocks pass it twice,
    the instant they jump when they skip it."""
    local = datetime.combine(day, wall)
    instant = local.replace(tzinfo=zone).astimezone(timezone.utc)  # fold=0: the earlier of two
    if instant.astimezone(zone).replace(tzinfo=None) == local:
        return instant
    # A skipped time: fold=0 read it with the offset before the jump, giving an instant after the
    # jump (03:30 CEST for 02:30 in Berlin, RFC 5545's answer); fold=1 reads it with the offset
    # after the jump, giving one before it (01:30 CET). The jump lies in between.
    return _jump(local.replace(tzinfo=zone, fold=1).astimezone(timezone.utc), instant, zone)


def _jump(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant in (before, after] at which `zone` changes to the UTC offset it has at `after`.
    zoneinfo does not expose its transitions, so bisect: transitions fall on whole seconds, and a
    one-hour gap takes 12 steps (a whole skipped day, 17)."""
    offset = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())  # low has the old offset, high the new
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, timezone.utc)


def _weekly(weekly: dict) -> tuple[frozenset[int], time, ZoneInfo]:
    """(weekdays as date.weekday() numbers, local time, zone) of a weekly schedule."""
    key = weekly["timezone"]
    try:
        zone = ZoneInfo(key)  # cached by zoneinfo: cheap on every call
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: a key outside the zone directory ("../etc") or a file that is no zone
        # ("zone.tab"); OSError: an unreadable file
        raise InvalidSchedule(f"schedule.weekly.timezone: unknown time zone {_shown(key)}") from None
    days = frozenset(DAYS.index(day) for day in weekly["days_of_week"])
    return days, time.fromisoformat(weekly["local_time"]), zone


def _instant(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
        if at.tzinfo is None:
            raise ValueError("no offset")
        return at.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # 2026-02-30; an offset pushing the instant out of range
        raise InvalidSchedule(f"schedule.at: not an RFC 3339 date-time with an offset: {_shown(text)}") from None


def _shown(value: str) -> str:
    return repr(value[:SHOWN]) + ("…" if len(value) > SHOWN else "")
