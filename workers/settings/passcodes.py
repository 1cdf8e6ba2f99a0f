"""Feed passcodes, kept only as a slow salted hash (stdlib scrypt: no dependency, memory-hard).

Stored as `scrypt$<log2 n>$<r>$<p>$<salt>$<hash>` so the cost can be raised later without
invalidating what is stored: a hash is checked with the parameters it was made with.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

LOG2_N, R, P, DKLEN = 14, 8, 1, 32   # 16 MiB and ~50 ms per hash here: fine once per attempt


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def hash_passcode(passcode: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(passcode.encode(), salt=salt, n=2 ** LOG2_N, r=R, p=P, dklen=DKLEN)
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(digest)}"


def check_passcode(passcode: str, stored: str) -> bool:
    """Constant-time comparison against a stored hash."""
    scheme, log2_n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown passcode hash scheme {scheme!r}")
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(passcode.encode(), salt=base64.b64decode(salt), n=2 ** int(log2_n),
                            r=int(r), p=int(p), dklen=len(expected))
    return hmac.compare_digest(actual, expected)
