"""The one request–reply answer format (shared/replies.py) and the HTTP status of each refusal."""
import orjson
import pytest

from shared import replies
from shared.errors import Forbidden, InvalidEvent, RateLimited, http_status


def test_an_answer_round_trips_with_its_result():
    answer = replies.decode(replies.ok({"upload": {"url": "https://s3/x"}}))
    assert (answer.status, answer.result) == (replies.OK, {"upload": {"url": "https://s3/x"}})
    assert replies.decode(replies.duplicate()).status == replies.DUPLICATE


def test_a_refusal_carries_reason_detail_field_and_retry_after():
    answer = replies.decode(replies.refusal(InvalidEvent("too long", field="data.body")))
    assert (answer.status, answer.error, answer.detail, answer.field) == (replies.ERROR, "invalid", "too long",
                                                                           "data.body")
    limited = replies.decode(replies.refusal(RateLimited("slow down", retry_after_s=30)))
    assert (limited.error, limited.retry_after_s) == ("rate_limited", 30)


def test_our_own_bug_answers_without_its_message():
    answer = replies.decode(replies.refusal(KeyError("passcode=1234"), "internal_error"))
    assert answer.error == "internal_error" and "1234" not in answer.detail


@pytest.mark.parametrize("body", [b"[]", b'{"status": "maybe"}', b"{}", b'"ok"'])
def test_what_is_not_a_reply_is_refused(body):
    with pytest.raises(ValueError):
        replies.decode(body)


def test_not_json_is_refused():
    with pytest.raises(orjson.JSONDecodeError):  # a ValueError: the ingress treats it as no answer
        replies.decode(b"\xff")


@pytest.mark.parametrize("reason,status", [
    (Forbidden.reason, 403), ("not_found", 404), ("idempotency_conflict", 409), ("unauthorized", 401),
    ("rate_limited", 429), ("access_denied", 403), ("already_uploaded", 409), ("unavailable", 503),
    ("internal_error", 502), ("too_many_sets", 422), (None, 422)])
def test_each_refusal_has_its_http_status(reason, status):
    assert http_status(reason) == status


def test_a_schema_violation_is_400_on_a_query_string_and_422_on_a_body():
    assert (http_status("invalid", invalid_status=400), http_status("invalid")) == (400, 422)
