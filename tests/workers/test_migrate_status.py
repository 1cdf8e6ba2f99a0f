"""`workers migrate --status`: applied and pending migrations per database, and an exit code a
deploy pipeline can stop on."""
from __future__ import annotations

from tests.support.processes import run_cli


def listing(result) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}


def test_status_lists_pending_then_applied_and_exits_nonzero_while_anything_waits(make_database, base_env):
    url = make_database("machine", migrated=False)
    env = {**base_env, "MACHINE_DATABASE_URL": url}

    fresh = run_cli("migrate", "--status", "machine", env=env, check=False)
    assert fresh.returncode == 1, fresh.stdout + fresh.stderr
    assert set(listing(fresh).values()) == {"pending"} and len(listing(fresh)) >= 2
    assert "machine: 0 applied" in fresh.stdout

    run_cli("migrate", "machine", env=env)
    current = run_cli("migrate", "--status", "machine", env=env, check=False)
    assert current.returncode == 0, current.stdout
    assert listing(current) == {m: "applied" for m in listing(fresh)}  # the same migrations, in order

    run_cli("migrate", "--rollback", "machine", env=env)
    behind = run_cli("migrate", "--status", "machine", env=env, check=False)
    assert behind.returncode == 1
    newest = list(listing(fresh))[-1]
    assert listing(behind)[newest] == "pending"
    assert sum(state == "pending" for state in listing(behind).values()) == 1


def test_an_unreachable_database_is_reported_without_its_password(base_env):
    env = {**base_env, "MACHINE_DATABASE_URL": "postgresql://spotter:hunter2secret@127.0.0.1:1/machine_db"}
    result = run_cli("migrate", "--status", "machine", env=env, check=False)
    assert result.returncode == 1
    assert "machine: cannot read its migrations" in result.stdout
    assert "hunter2secret" not in result.stdout + result.stderr
