"""What a refused event's sender reads (shared/errors.py) and how reconnects back off (shared/backoff.py)."""
from __future__ import annotations

import psycopg2.errors
import pytest

from shared import backoff
from shared.backoff import Backoff
from shared.errors import (MAX_DETAIL, Forbidden, IdempotencyConflict, InvalidEvent, NotFound, NotYet,
                           PermanentError, RateLimited, TransientError, UnknownEventType, UnsupportedVersion,
                           describe, public_detail, safe_message)


def test_each_refusal_carries_the_reason_it_is_dead_lettered_under():
    assert [e("x").reason for e in (InvalidEvent, UnsupportedVersion, UnknownEventType, Forbidden, NotFound,
                                    IdempotencyConflict)] == \
        ["invalid", "unsupported_version", "unknown_event_type", "forbidden", "not_found", "idempotency_conflict"]
    assert RateLimited("slow down", retry_after_s=30).retry_after_s == 30
    assert InvalidEvent("x", reason="too_large").reason == "too_large"
    assert (NotYet("x").reason, NotYet.exhausted_reason) == ("not_yet", "not_found")
    assert issubclass(UnsupportedVersion, PermanentError) and not issubclass(NotYet, PermanentError)
    assert issubclass(NotYet, TransientError)


def test_our_own_refusals_reach_the_sender_as_written():
    assert public_detail(Forbidden("only the author may delete a comment"), "forbidden") == \
        "only the author may delete a comment"
    assert public_detail(NotYet("the post is not there yet"), "not_found") == "the post is not there yet"


def test_a_database_or_library_error_never_reaches_the_sender():
    leaked = RuntimeError('duplicate key value violates unique constraint "users_pkey" DETAIL: (secret)')
    assert public_detail(leaked, "rejected_by_database").startswith("the event's data could not be stored")
    assert "users_pkey" not in public_detail(leaked, "rejected_by_database")
    assert public_detail(leaked, "retries_exhausted") == \
        "the event could not be processed: a service it needs kept failing"
    assert public_detail(leaked, "something_else") == "the event could not be processed"
    assert public_detail(None, "internal") == "the event could not be processed"


def test_the_public_detail_is_bounded_and_never_empty():
    assert len(public_detail(InvalidEvent("x" * 5000), "invalid")) == MAX_DETAIL
    assert public_detail(InvalidEvent("a\x00b"), "invalid") == "ab"
    assert public_detail(InvalidEvent("  \x00 "), "invalid") == "invalid"


def test_a_postgres_error_keeps_only_its_first_line_in_logs():
    err = psycopg2.errors.CheckViolation('new row violates check constraint "age"\n'
                                         "DETAIL:  Failing row contains (passcode-1234).")
    assert safe_message(err) == 'new row violates check constraint "age"'
    assert describe(err) == 'CheckViolation: new row violates check constraint "age"'
    assert safe_message(ValueError("a\nb")) == "a\nb"  # other messages are kept whole


@pytest.fixture
def no_jitter(monkeypatch):
    monkeypatch.setattr(backoff.random, "uniform", lambda low, high: 1.0)


def test_backoff_doubles_up_to_the_cap_and_starts_over_after_reset(no_jitter):
    b = Backoff(first=0.5, cap=5.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    b.reset()
    assert b.next() == 0.5


def test_backoff_jitter_stays_within_a_fifth_either_way():
    delays = [Backoff(first=10, cap=10).next() for _ in range(200)]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(set(delays)) > 1  # replicas reconnecting together do not stay in step
