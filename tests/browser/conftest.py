"""One headless Chromium for the session, and pages served from a real origin."""
from __future__ import annotations

import pytest

from tests.support.browser import Browser, PageServer


@pytest.fixture(scope="session")
def browser():
    """Starting Chromium takes seconds: every test shares one, each with its own pages and origin."""
    started = Browser()
    yield started
    started.close()


@pytest.fixture
def page_server():
    """page_server({"/": html}) → a PageServer on a fresh port: a fresh origin, so no test sees another's storage."""
    servers = []

    def serve(pages: dict[str, str]) -> PageServer:
        servers.append(PageServer(pages))
        return servers[-1]

    yield serve
    for server in servers:
        server.close()
