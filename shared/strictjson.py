"""Strict JSON parsing for anything that comes over the wire (DESIGN §6)."""
from __future__ import annotations

import json
import re

import orjson

from shared.errors import InvalidEvent

MAX_DEPTH = 32
MAX_INT_DIGITS = 64
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates (not valid UTF-8)


def _no_duplicates(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidEvent(f"duplicate key {key!r}", field=key)
            seen.add(key)
    return obj


def _no_constant(name):
    raise InvalidEvent(f"{name} is not valid JSON")


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise InvalidEvent(f"number {text[:32]} is out of range")
    return value


def _bounded_int(text):
    # past 4,300 digits Python's own error suggests sys.set_int_max_str_digits to the client;
    # no field of ours takes an integer of even 64 digits
    if len(text) > MAX_INT_DIGITS:
        raise InvalidEvent(f"integer of {len(text)} digits is out of range")
    return int(text)


def _check(value, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidEvent(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if _BAD_CHARS.search(value):
            raise InvalidEvent("string contains NUL or invalid UTF-16 surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _BAD_CHARS.search(key):
                raise InvalidEvent("key contains NUL or invalid UTF-16 surrogate")
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)


def loads(body: bytes | str, max_bytes: int | None = None):
    """Parse JSON, refusing NaN/Infinity, duplicate keys, deep nesting, NUL and bad UTF-8."""
    if max_bytes is not None and len(body) > max_bytes:
        raise InvalidEvent(f"body larger than {max_bytes} bytes", reason="too_large")
    # Fast path: orjson refuses NaN, bad UTF-8 and lone surrogates; if re-serializing gives the
    # very same bytes, the body is compact canonical JSON and so cannot hold a duplicate key.
    if isinstance(body, bytes):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = None
        else:
            if orjson.dumps(value) == body:
                # orjson escapes NUL as \u0000; with few brackets the nesting cannot be deep
                if b"\\u0000" in body:
                    raise InvalidEvent("string contains NUL")
                if body.count(b"{") + body.count(b"[") > MAX_DEPTH:
                    _check(value, 0)
                return value
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(body, object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constant, parse_float=_finite_float,
                           parse_int=_bounded_int)
    except InvalidEvent:
        raise
    except RecursionError:
        raise InvalidEvent(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    _check(value, 0)
    return value
