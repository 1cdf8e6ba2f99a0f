"""Retention settings of `workers prune`: the cut-offs, and the refusal of a retention that would
let a redelivered message be applied twice (workers/ops/retention.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.config import Config, StorageConfig
from workers.ops.retention import (DAY, RetentionConfig, RetentionRefused, check, cutoff, redelivery_window_s,
                                   retry_span_s)

DEFAULTS = Config()
UPLOAD_EXPIRY_S = StorageConfig(None, "b", None, None).upload_expiry_s


def test_the_retry_span_adds_the_delay_of_every_retry_the_last_one_repeating():
    assert retry_span_s(6, (1, 5, 30, 120)) == 1 + 5 + 30 + 120 + 120
    assert retry_span_s(3, (1, 2)) == 1 + 2
    assert retry_span_s(2, (7, 9)) == 7
    assert retry_span_s(1, (1, 5)) == 0  # one attempt: no retry


def test_the_redelivery_window_is_the_replay_window_plus_the_retries():
    retention = RetentionConfig(dead_letter_replay_s=3 * DAY)
    assert redelivery_window_s(retention, 6, (1, 5, 30, 120)) == 3 * DAY + 276


def test_the_defaults_pass_the_check_under_the_default_config():
    check(RetentionConfig(), DEFAULTS.max_attempts, DEFAULTS.retry_delays_s, UPLOAD_EXPIRY_S)
    assert RetentionConfig().idempotency_s == 14 * DAY


def test_a_key_retention_not_past_the_redelivery_window_is_refused_naming_both():
    window = redelivery_window_s(RetentionConfig(), 6, (1, 5, 30, 120))
    with pytest.raises(RetentionRefused, match=f"IDEMPOTENCY_RETENTION_S={window} must exceed .*{window} s"):
        check(RetentionConfig(idempotency_s=window), 6, (1, 5, 30, 120), UPLOAD_EXPIRY_S)
    check(RetentionConfig(idempotency_s=window + 1), 6, (1, 5, 30, 120), UPLOAD_EXPIRY_S)


def test_longer_retries_raise_the_floor():
    retention = RetentionConfig(idempotency_s=8 * DAY, dead_letter_replay_s=7 * DAY)
    check(retention, 6, (1, 5, 30, 120), UPLOAD_EXPIRY_S)
    with pytest.raises(RetentionRefused, match="retries 90000 s"):
        check(retention, 11, (9000,), UPLOAD_EXPIRY_S)  # ten retries of 2.5 h


def test_an_upload_whose_form_still_works_is_not_abandoned():
    with pytest.raises(RetentionRefused, match="ABANDONED_UPLOAD_RETENTION_S=900 must exceed UPLOAD_URL_EXPIRY_S=900"):
        check(RetentionConfig(abandoned_upload_s=900), 6, (1,), 900)
    check(RetentionConfig(abandoned_upload_s=901), 6, (1,), 900)


def test_from_env_reads_every_setting_and_refuses_nonsense():
    env = {"IDEMPOTENCY_RETENTION_S": "2000000", "REJECTION_RETENTION_S": "5", "SOURCE_RETENTION_S": "60",
           "ABANDONED_UPLOAD_RETENTION_S": "7200", "DEAD_LETTER_REPLAY_WINDOW_S": "100", "PRUNE_BATCH": "50",
           "PRUNE_LOCK_TIMEOUT_MS": "250"}
    assert RetentionConfig.from_env(env) == RetentionConfig(2_000_000, 5, 60, 7200, 100, 50, 250)
    assert RetentionConfig.from_env({}) == RetentionConfig()
    assert RetentionConfig.from_env({"SOURCE_RETENTION_S": ""}) == RetentionConfig()  # empty: the default
    with pytest.raises(RetentionRefused, match="PRUNE_BATCH must be a whole number"):
        RetentionConfig.from_env({"PRUNE_BATCH": "1e3"})
    with pytest.raises(RetentionRefused, match="SOURCE_RETENTION_S must be at least 1"):
        RetentionConfig.from_env({"SOURCE_RETENTION_S": "0"})


def test_the_cutoff_is_now_minus_the_retention_and_wants_a_zone():
    now = datetime(2025, 11, 5, 10, 0, tzinfo=timezone.utc)
    assert cutoff(now, 14 * DAY) == datetime(2025, 10, 22, 10, 0, tzinfo=timezone.utc)
    assert cutoff(now, 1) == now - timedelta(seconds=1)
    with pytest.raises(ValueError):
        cutoff(now.replace(tzinfo=None), 60)
