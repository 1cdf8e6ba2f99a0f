"""The unit tier: pure functions, no services. A test here that opens a network connection fails,
so the tier keeps running with PostgreSQL and RabbitMQ stopped (see tests/README.md)."""
from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a unit test connected to {address}: it belongs in an integration tier")
        return real_connect(self, address, *args)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
