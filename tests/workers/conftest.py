import pytest

from tests.support.processes import workers_cli


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
