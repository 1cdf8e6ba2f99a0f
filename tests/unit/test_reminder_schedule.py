"""When a reminder fires (workers/reminder/schedule.py): weekly wall-clock times across daylight-saving
changes, the skipped and the repeated hour, and one-off instants. Every expectation is a UTC instant."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from workers.reminder.schedule import InvalidSchedule, check, next_occurrence

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def weekly(days: list[str], local_time: str, zone: str) -> dict:
    return {"weekly": {"days_of_week": days, "local_time": local_time, "timezone": zone}}


def occurrences(schedule: dict, after: str, count: int) -> list[datetime]:
    """The next `count` occurrences after `after`, each asked for after the previous one."""
    found, moment = [], utc(after)
    for _ in range(count):
        moment = next_occurrence(schedule, moment)
        found.append(moment)
    return found


def test_seven_in_berlin_stays_seven_on_the_wall_clock_across_both_changes():
    berlin = weekly(EVERY_DAY, "07:00", "Europe/Berlin")
    # 2026-03-29: CET (+01) → CEST (+02); 2026-10-25: back
    assert occurrences(berlin, "2026-03-27T12:00:00Z", 3) == [
        utc("2026-03-28T06:00:00Z"), utc("2026-03-29T05:00:00Z"), utc("2026-03-30T05:00:00Z")]
    found = occurrences(berlin, "2026-10-23T12:00:00Z", 3)
    assert found == [utc("2026-10-24T05:00:00Z"), utc("2026-10-25T06:00:00Z"), utc("2026-10-26T06:00:00Z")]
    assert {instant.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") for instant in found} == {"07:00"}


def test_seven_in_new_york_stays_seven_on_the_wall_clock_across_both_changes():
    new_york = weekly(EVERY_DAY, "07:00", "America/New_York")
    # 2026-03-08: EST (-05) → EDT (-04); 2026-11-01: back
    assert occurrences(new_york, "2026-03-06T20:00:00Z", 3) == [
        utc("2026-03-07T12:00:00Z"), utc("2026-03-08T11:00:00Z"), utc("2026-03-09T11:00:00Z")]
    assert occurrences(new_york, "2026-10-30T20:00:00Z", 3) == [
        utc("2026-10-31T11:00:00Z"), utc("2026-11-01T12:00:00Z"), utc("2026-11-02T12:00:00Z")]


def test_a_skipped_time_fires_at_the_instant_the_clocks_jump_then_at_its_wall_time_again():
    berlin = weekly(["sun"], "02:30", "Europe/Berlin")
    assert occurrences(berlin, "2026-03-21T12:00:00Z", 3) == [
        utc("2026-03-22T01:30:00Z"),  # 02:30 CET
        utc("2026-03-29T01:00:00Z"),  # 02:30 does not exist: 02:00 CET jumps to 03:00 CEST
        utc("2026-04-05T00:30:00Z")]  # 02:30 CEST
    new_york = weekly(["sun"], "02:30", "America/New_York")
    assert occurrences(new_york, "2026-03-07T12:00:00Z", 2) == [
        utc("2026-03-08T07:00:00Z"),  # 03:00 EDT, not RFC 5545's 03:30
        utc("2026-03-15T06:30:00Z")]  # 02:30 EDT


def test_every_time_in_the_gap_fires_at_the_jump_and_its_end_is_a_valid_time():
    for local_time in ("02:00", "02:01", "02:59", "03:00"):
        schedule = weekly(["sun"], local_time, "Europe/Berlin")
        assert next_occurrence(schedule, utc("2026-03-28T12:00:00Z")) == utc("2026-03-29T01:00:00Z"), local_time


def test_the_jump_is_found_for_a_half_hour_change_and_for_a_skipped_day():
    # Lord Howe Island moves from +10:30 to +11 at 02:00 local on 2026-10-04
    lord_howe = weekly(["sun"], "02:15", "Australia/Lord_Howe")
    assert next_occurrence(lord_howe, utc("2026-10-01T00:00:00Z")) == utc("2026-10-03T15:30:00Z")
    # Samoa skipped Friday 2011-12-30: Thursday 23:59:59 (-10) was followed by Saturday 00:00 (+14)
    apia = weekly(["fri", "sat"], "07:00", "Pacific/Apia")
    assert occurrences(apia, "2011-12-29T12:00:00Z", 2) == [utc("2011-12-30T10:00:00Z"), utc("2011-12-30T17:00:00Z")]


def test_a_repeated_time_fires_once_at_the_first_instant():
    berlin = weekly(["sun"], "02:30", "Europe/Berlin")
    assert occurrences(berlin, "2026-10-24T12:00:00Z", 2) == [
        utc("2026-10-25T00:30:00Z"),  # 02:30 CEST; the 02:30 CET an hour later does not fire
        utc("2026-11-01T01:30:00Z")]  # 02:30 CET
    # asked between the two 02:30s (at 02:00 CET), the answer is still the next Sunday
    assert next_occurrence(berlin, utc("2026-10-25T01:00:00Z")) == utc("2026-11-01T01:30:00Z")
    new_york = weekly(["sun"], "01:30", "America/New_York")
    assert occurrences(new_york, "2026-10-31T12:00:00Z", 2) == [utc("2026-11-01T05:30:00Z"), utc("2026-11-08T06:30:00Z")]


def test_only_the_listed_days_fire_and_an_occurrence_is_not_after_itself():
    berlin = weekly(["fri", "mon", "wed"], "07:00", "Europe/Berlin")
    # 2026-06-01 is a Monday; asked exactly at its occurrence, the next one is Wednesday's
    assert occurrences(berlin, "2026-06-01T05:00:00Z", 4) == [
        utc("2026-06-03T05:00:00Z"), utc("2026-06-05T05:00:00Z"), utc("2026-06-08T05:00:00Z"),
        utc("2026-06-10T05:00:00Z")]
    mondays = weekly(["mon"], "07:00", "Europe/Berlin")
    assert next_occurrence(mondays, utc("2026-06-01T05:00:00Z")) == utc("2026-06-08T05:00:00Z")
    assert next_occurrence(mondays, utc("2026-06-01T04:59:59Z")) == utc("2026-06-01T05:00:00Z")


def test_after_may_be_in_any_zone_the_day_is_the_schedules_and_the_answer_is_utc():
    los_angeles = weekly(["mon"], "23:00", "America/Los_Angeles")
    # Tuesday 09:00 in Tokyo is still Monday 17:00 in Los Angeles: Monday 23:00 PDT is ahead
    after = datetime(2026, 6, 2, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    found = next_occurrence(los_angeles, after)
    assert found == utc("2026-06-02T06:00:00Z")
    assert found.tzinfo is timezone.utc


def test_a_one_off_fires_once_at_its_instant_whatever_its_offset():
    at = {"at": "2026-12-24T07:00:00Z"}
    assert next_occurrence(at, utc("2026-12-24T06:59:59Z")) == utc("2026-12-24T07:00:00Z")
    assert next_occurrence(at, utc("2026-12-24T07:00:00Z")) is None
    assert next_occurrence(at, utc("2027-01-01T00:00:00Z")) is None
    found = next_occurrence({"at": "2026-12-24T08:00:00.5+01:00"}, utc("2026-12-01T00:00:00Z"))
    assert found == utc("2026-12-24T07:00:00.5Z") and found.tzinfo is timezone.utc


def test_what_the_schema_lets_through_but_cannot_be_computed_is_invalid_naming_the_field():
    check(weekly(["mon"], "07:00", "Europe/Berlin"))
    check({"at": "2026-12-24T07:00:00-05:00"})
    with pytest.raises(InvalidSchedule, match=r"^schedule\.weekly\.timezone: unknown time zone 'Mars/Base'$"):
        check(weekly(["mon"], "07:00", "Mars/Base"))
    with pytest.raises(InvalidSchedule, match="schedule.weekly.timezone"):
        next_occurrence(weekly(["mon"], "07:00", "Mars/Base"), utc("2026-06-01T00:00:00Z"))
    for key in ("../etc", "Europe", "zone.tab"):  # outside the zone directory, a directory, no zone file
        with pytest.raises(InvalidSchedule, match="schedule.weekly.timezone: unknown time zone"):
            check(weekly(["mon"], "07:00", key))
    for at in ("2026-02-30T07:00:00Z", "2026-12-24T07:00:00", "0001-01-01T00:00:00+01:00"):
        with pytest.raises(InvalidSchedule, match=r"^schedule\.at: "):
            check({"at": at})


def test_an_error_shows_at_most_64_characters_of_the_value():
    with pytest.raises(InvalidSchedule) as invalid:
        check(weekly(["mon"], "07:00", "A" * 63 + "BC"))
    assert str(invalid.value) == "schedule.weekly.timezone: unknown time zone '" + "A" * 63 + "B'…"
