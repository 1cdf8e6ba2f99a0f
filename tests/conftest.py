"""Fixtures on the real services: a throwaway RabbitMQ vhost and PostgreSQL database per test,
and the processes (workers, ingress, the feed stack) tests start on them.

Every fixture touching a service is requested by the tests that need it, never autouse: the unit
tier (tests/unit) runs with PostgreSQL and RabbitMQ stopped. Helpers live in tests/support."""
from __future__ import annotations

import secrets
import uuid

import pytest

from workers.ops import migrate
from shared.tokens import mint
from tests.support import auth, feed_stack as feed_stack_support, rabbit
from tests.support.db import PG, drop_database
from tests.support.http import ready
from tests.support.net import free_port
from tests.support.processes import workers_cli


@pytest.fixture(scope="session", autouse=True)
def no_passcode_in_any_log():
    """DESIGN §6: no passcode used anywhere in the suite appears in any process's log."""
    yield
    from tests.support.processes import STARTED
    from tests.support.secrets import leaked
    found = {str(p.log_path): leaked(p.text()) for p in STARTED if leaked(p.text())}
    assert not found, f"passcodes in logs: {found}"


@pytest.fixture
def vhost():
    """URL of a fresh vhost; everything declared in it disappears with it."""
    name, url = rabbit.create_vhost()
    yield url
    rabbit.delete_vhost(name)


@pytest.fixture
def rmq(vhost):
    client = rabbit.Rabbit(vhost)
    client.channel.exchange_declare("app.events", exchange_type="topic", durable=True)
    yield client
    client.close()


@pytest.fixture
def make_database():
    """make_database("settings") → URL of a new, migrated database for that domain."""
    created = []

    def make(domain: str, migrated: bool = True) -> str:
        name = f"{domain}_test_{uuid.uuid4().hex[:10]}"
        url = PG + name
        migrate.ensure_database(url)
        created.append(name)
        if migrated:
            migrate.apply(domain, url)
        return url

    yield make
    for name in created:
        drop_database(name)


@pytest.fixture
def settings_db(make_database):
    return make_database("settings")


@pytest.fixture(scope="session")
def jwt_secret():
    return secrets.token_urlsafe(32)  # 43 bytes: the ingress refuses HS keys under 32


@pytest.fixture(scope="session")
def feed_keys():
    """(private PEM, public PEM): the settings worker's feed access token key pair."""
    from shared.feedtokens import generate_keypair
    return generate_keypair()


@pytest.fixture
def base_env(vhost, jwt_secret, feed_keys):
    """Environment for a worker or ingress process talking to this test's vhost."""
    return {"RABBITMQ_URL": vhost, **auth.ingress_env(jwt_secret),
            "FEED_TOKEN_PRIVATE_KEY": feed_keys[0], "FEED_TOKEN_PUBLIC_KEY": feed_keys[1],
            "LOG_LEVEL": "INFO", "RETRY_DELAYS_S": "1,2", "MAX_ATTEMPTS": "3",
            "OUTBOX_RELAY_INTERVAL_S": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def local_s3():
    """One ministack server for the session, spoken to over HTTP exactly as to Spaces."""
    from workers.ops.localstorage import LocalS3
    server = LocalS3().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(local_s3):
    """Environment for a process using a fresh private bucket of its own."""
    from workers.runtime.storage import Storage, StorageConfig
    env = local_s3.env(f"media-{uuid.uuid4().hex[:12]}")
    storage = Storage(StorageConfig(env["S3_ENDPOINT_URL"], env["S3_BUCKET"], env["S3_ACCESS_KEY"],
                                    env["S3_SECRET_KEY"]))
    storage.ensure_bucket()
    return env


@pytest.fixture
def storage(s3_env):
    from workers.runtime.storage import Storage, StorageConfig
    return Storage(StorageConfig(s3_env["S3_ENDPOINT_URL"], s3_env["S3_BUCKET"], s3_env["S3_ACCESS_KEY"],
                                 s3_env["S3_SECRET_KEY"]))


@pytest.fixture
def start_worker(base_env):
    """start_worker("settings", SETTINGS_DATABASE_URL=…) → a running `workers run` process."""
    started = []

    def start(name: str, **env):
        proc = workers_cli("run", name, env={**base_env, **{k: str(v) for k, v in env.items()}})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()


@pytest.fixture
def start_ingress(base_env):
    """start_ingress() → the port of a running ingress (gunicorn) on this test's vhost."""
    started = []

    def start(**env) -> int:
        port = free_port()
        proc = workers_cli("serve", env={**base_env, "PORT": str(port), **{k: str(v) for k, v in env.items()}})
        started.append(proc)
        rabbit.wait_for(lambda: ready(port), message="ingress ready")
        return port

    yield start
    for proc in started:
        proc.terminate()


@pytest.fixture
def bearer(jwt_secret):
    """bearer(user_id) → a bearer token the test ingress accepts."""
    return lambda user_id: mint(user_id, auth.jwt_config(jwt_secret))


@pytest.fixture(scope="module")
def feed_stack(jwt_secret, feed_keys, local_s3):
    """The ingress, settings and video workers on their own vhost, databases and bucket, for a module."""
    with feed_stack_support.running(jwt_secret, feed_keys, local_s3) as stack:
        yield stack


# ---- tiers (tests/README.md): a marker per directory, so `-m unit` and the like select one --------
_TIERS = {"unit": "pure functions, no services (tests/unit)",
          "integration": "one component on the real services (tests/shared, tests/ingress, tests/workers, tests/k8s)",
          "e2e": "stories across processes, and the browser (tests/test_*.py, tests/browser)"}


def pytest_configure(config):
    for name, what in _TIERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")


def pytest_collection_modifyitems(items):
    for item in items:
        parts = item.nodeid.split("/")
        folder = parts[1] if len(parts) > 2 else ""
        tier = ("unit" if folder == "unit" else "integration" if folder in ("shared", "ingress", "workers", "k8s")
                else "e2e")
        item.add_marker(tier)
