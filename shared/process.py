"""This process's id, without a system call each time it is asked for.

glibc stopped caching getpid(), so os.getpid() is a system call; the ingress asked for it five
times a request (fork checks, prometheus_client's per-increment check), about 2 % of its CPU
(py-spy --native). The id changes only at a fork, and os.register_at_fork tells us when.
"""
from __future__ import annotations

import os

_pid = os.getpid()


def pid() -> int:
    return _pid


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)
