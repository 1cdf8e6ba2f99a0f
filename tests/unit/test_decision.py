"""What becomes of a message once tried (workers/runtime/decision.py): pure, no services."""
from workers.runtime.decision import ACK, DEAD, RETRY, decide
from shared.errors import Forbidden, InvalidEvent, NotYet, TransientError

DELAYS = (5, 30, 120)


def test_applied_and_duplicate_messages_are_acked():
    assert decide("processed", None, 1, 5, DELAYS).action == ACK
    assert decide("duplicate", None, 3, 5, DELAYS).action == ACK


def test_a_transient_failure_waits_longer_each_attempt_and_the_last_delay_repeats():
    delays = [decide("retry", TransientError("db busy"), n, 9, DELAYS) for n in range(1, 6)]
    assert {d.action for d in delays} == {RETRY}
    assert [d.retry_in_s for d in delays] == [5, 30, 120, 120, 120]


def test_retries_used_up_dead_letter_with_the_errors_own_reason_when_it_has_one():
    spent = decide("retry", TransientError("db busy"), 5, 5, DELAYS)
    assert (spent.action, spent.reason) == (DEAD, "retries_exhausted")
    assert "secret" not in spent.detail and spent.detail  # a generic sentence for the sender
    missing = decide("retry", NotYet("program p1 is not there"), 5, 5, DELAYS)
    assert (missing.action, missing.reason, missing.detail) == (DEAD, "not_found", "program p1 is not there")


def test_a_permanent_failure_is_dead_at_once_with_its_reason_and_readable_detail():
    refused = decide("dead", Forbidden("not your video"), 1, 5, DELAYS)
    assert (refused.action, refused.reason, refused.detail) == (DEAD, "forbidden", "not your video")
    invalid = decide("dead", InvalidEvent("age: must be ≤ 120", field="data.age"), 1, 5, DELAYS)
    assert invalid.reason == "invalid"


def test_a_database_refusal_names_no_table_to_the_sender():
    class CheckViolation(Exception):  # what psycopg2 raises has no `reason`
        pass
    refused = decide("dead", CheckViolation('new row for relation "probe" violates check constraint'), 1, 5, DELAYS)
    assert refused.reason == "rejected_by_database"
    assert "probe" not in refused.detail
