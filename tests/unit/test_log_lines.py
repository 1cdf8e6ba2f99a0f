"""The pure parts of shared/logging.py: how a library's level, an exception and a line's fields
become the JSON an operator searches (tests/test_process_logs.py runs the processes)."""
from __future__ import annotations

import logging
import sys

from shared.logging import _line, exception_fields, level_name, library_levels


def test_stdlib_levels_map_to_ours_and_custom_levels_round_down():
    assert [level_name(n) for n in (5, 10, 20, 25, 30, 40, 50, 60)] == \
        ["DEBUG", "DEBUG", "INFO", "INFO", "WARNING", "ERROR", "CRITICAL", "CRITICAL"]


def test_libraries_log_from_warning_up_and_pika_retells_nothing_unless_debugging():
    levels = library_levels("INFO")
    assert levels[""] == logging.WARNING
    assert levels["pika.adapters.utils.connection_workflow"] == logging.CRITICAL
    assert library_levels("warning")[""] == logging.WARNING
    debug = library_levels("debug")
    assert debug[""] == logging.DEBUG and all(v == logging.NOTSET for k, v in debug.items() if k)


def _raise_here():
    raise ValueError("bad PREFETCH")


def test_an_exception_is_its_type_and_message_plus_one_frame_per_line():
    try:
        _raise_here()
    except ValueError:
        fields = exception_fields(*sys.exc_info())
    assert fields["exception"] == "ValueError: bad PREFETCH"
    frames = fields["traceback"].splitlines()
    assert frames[-1].endswith('in _raise_here: raise ValueError("bad PREFETCH")')
    assert "test_log_lines.py:" in frames[-1] and "^" not in fields["traceback"]


def test_an_exception_without_a_traceback_has_no_traceback_field():
    assert exception_fields(KeyError, KeyError("kid"), None) == {"exception": "KeyError: 'kid'"}


def test_a_line_keeps_the_logger_and_redacts_secrets_whoever_logged_them():
    line = _line("warning", 1.5, "retrying", {"logger": "botocore.retryhandler", "Authorization": "Bearer x"})
    assert line == {"level": "warning", "ts": 1.5, "service": line["service"], "msg": "retrying",
                    "logger": "botocore.retryhandler", "Authorization": "[redacted]"}
