"""Every passcode a test uses, so the session can prove none of them was ever written down."""
from __future__ import annotations

import uuid

PASSCODES: set[str] = set()


def passcode() -> str:
    value = f"pc-{uuid.uuid4().hex[:16]}"
    PASSCODES.add(value)
    return value


def leaked(text: str) -> list[str]:
    return sorted(p for p in PASSCODES if p in text)
