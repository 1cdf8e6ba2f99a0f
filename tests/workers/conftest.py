import pytest

from shared.tokens import mint
from tests.support.auth import jwt_config
from tests.support.processes import workers_cli
from tests.support.rabbit import wait_for
from tests.test_end_to_end import _ready, free_port


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
        wait_for(lambda: _ready(port), message="ingress ready")
        return port

    yield start
    for proc in started:
        proc.terminate()


@pytest.fixture
def bearer(jwt_secret):
    """bearer(user_id) → a bearer token the test ingress accepts."""
    return lambda user_id: mint(user_id, jwt_config(jwt_secret))


def answering_queries(proc) -> bool:
    """True once a worker started with start_worker consumes its query queue."""
    return any(line.get("msg") == "answering queries" for line in proc.logs())
