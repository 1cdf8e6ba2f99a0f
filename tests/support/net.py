"""Local ports for the processes a test starts."""
from __future__ import annotations

import socket


def free_port(span: int = 1) -> int:
    """A free port; with span, the first of that many consecutive free ports."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + span <= 65536 and all(_bindable(first + i) for i in range(1, span)):
            return first


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
