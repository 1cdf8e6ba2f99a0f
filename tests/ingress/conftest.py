"""Fixtures of the ingress's integration tests."""
from __future__ import annotations

import pytest

from tests.support import rabbit


@pytest.fixture(scope="module")
def broker_url():
    """A RabbitMQ vhost of the module's own."""
    name, url = rabbit.create_vhost()
    yield url
    rabbit.delete_vhost(name)
