"""`workers dev`: the whole system in the foreground for local development; Ctrl-C stops all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from workers import WORKERS, load


def _ensure_dev_env(env_file: Path) -> None:
    """First run: the development keys still missing (workers/ops/devenv.py), appended to .env (never committed)."""
    from shared.secrets import waived
    from workers.ops.devenv import dev_keys, env_lines

    fresh = dev_keys()
    missing: list[str] = []
    if not (os.environ.get("JWT_SECRET") or os.environ.get("JWT_PUBLIC_KEY")):
        missing += ["JWT_ALGORITHM", "JWT_SECRET"]
    if not waived(os.environ):  # the ingress requires both; `workers token` puts them in its tokens
        missing += [name for name in ("JWT_ISSUER", "JWT_AUDIENCE") if not os.environ.get(name)]
    if not os.environ.get("EVENT_ID_KEY"):
        missing.append("EVENT_ID_KEY")
    if not os.environ.get("FEED_TOKEN_PRIVATE_KEY"):
        missing += ["FEED_TOKEN_PRIVATE_KEY", "FEED_TOKEN_PUBLIC_KEY"]
    if not missing:
        return
    keys = {name: fresh[name] for name in missing}
    with env_file.open("a") as f:
        f.write("\n".join(env_lines(keys)) + "\n")
    os.environ.update(keys)
    click.echo(f"wrote development {', '.join(missing)} to {env_file}", err=True)


def _prepare() -> None:
    from shared import broker, topology
    from workers.ops import migrate
    from workers.runtime import receipts
    from shared.config import Config, database_url

    config = Config.from_env()
    for name in sorted(WORKERS):
        domain = load(name).database
        url = database_url(domain, allow_plain=False)
        if migrate.ensure_database(url):
            click.echo(f"created database for {domain}", err=True)
        migrate.apply(domain, url)
    connection = broker.connect(config.rabbitmq_url, client_name="workers-dev")
    channel = connection.channel()
    for name in sorted(WORKERS):
        spec = load(name)
        topology.declare_worker(channel, name, spec.handlers.keys(), config.exchange,
                                config.delivery_limit, config.retry_delays_s)
        topology.declare_queries(channel, name, receipts.with_receipts(spec).queries.keys(), config.exchange)
    connection.close()


def _start_storage():
    """A local S3 server unless S3_ENDPOINT_URL points somewhere already."""
    from workers.runtime.storage import Storage, StorageConfig
    from workers.ops.localstorage import LocalS3

    server = None
    if not os.environ.get("S3_ENDPOINT_URL"):
        server = LocalS3(port=int(os.environ.get("LOCAL_S3_PORT", "4566"))).start()
        os.environ.update(server.env(os.environ.get("S3_BUCKET", "spotter-media")))
        click.echo(f"local S3 (ministack) on {server.url}, bucket {os.environ['S3_BUCKET']}", err=True)
    Storage(StorageConfig.from_env()).ensure_bucket()
    if server is not None:  # the local bucket gets the production rules, so browser uploads work here too
        from shared.config import Config
        from workers.ops.storage_setup import cors_origins, setup
        setup(StorageConfig.from_env(), cors_origins(Config.from_env().cors_allowed_origins))
    return server


def _start_devpage(ingress_url: str):
    """The example page (workers/ops/devpage.py), minting tokens as `workers token` does."""
    from shared import tokens
    from shared.config import Config
    from workers.ops.devpage import DevPage

    jwt = Config.from_env().jwt
    ttl_s = min(600, jwt.max_ttl_s)  # short-lived: the page asks again when one expires
    port = int(os.environ.get("DEV_PAGE_PORT") or 8090)
    try:
        page = DevPage(ingress_url, port, lambda user_id: tokens.mint(user_id, jwt, ttl_s)).start()
    except OSError as exc:  # a convenience: a busy port is no reason to refuse the whole stack
        click.echo(f"example page not started on port {port} ({exc.strerror}): set DEV_PAGE_PORT", err=True)
        return None
    return page


def _health_ports() -> dict[str, int]:
    """One health/metrics port per worker on this host: HEALTH_PORT (default 8081) and up."""
    first = int(os.environ.get("HEALTH_PORT") or 8081)
    if first == 0:  # each picks a free port and logs it
        return {name: 0 for name in sorted(WORKERS)}
    return {name: first + i for i, name in enumerate(sorted(WORKERS))}


def _refuse_unusable_keys(env_file: Path) -> None:
    """Every process would refuse a placeholder or weak key at its start: say so once, up front."""
    from shared.secrets import process_problems

    problems = {p for name in ["ingress", *sorted(WORKERS)] for p in process_problems(name)}
    for p in sorted(problems, key=lambda p: p.variable):
        click.echo(f"refusing to start: {p} (in the environment or {env_file}): {p.fix}", err=True)
    if problems:
        sys.exit(2)


def run_dev_stack(port: int | None, env_file: Path = Path(".env")) -> None:
    _ensure_dev_env(env_file)
    _refuse_unusable_keys(env_file)
    if "CORS_ALLOWED_ORIGINS" not in os.environ:  # a dev server of a browser app, on any local port
        from ingress.cors import DEV_DEFAULT
        os.environ["CORS_ALLOWED_ORIGINS"] = DEV_DEFAULT
    if port:
        os.environ["PORT"] = str(port)
    _prepare()
    storage_server = _start_storage()
    cli = [sys.executable, "-m", "workers"]
    commands = {"ingress": cli + ["serve"], **{name: cli + ["run", name] for name in sorted(WORKERS)}}
    ports = _health_ports()
    ingress_url = f"http://127.0.0.1:{os.environ.get('PORT', '8080')}"
    devpage = _start_devpage(ingress_url)  # before the processes: nothing to clean up if it raises
    procs = {name: subprocess.Popen(cmd, env={**os.environ, **({"HEALTH_PORT": str(ports[name])} if name in ports else {})})
             for name, cmd in commands.items()}
    click.echo(f"ingress on {ingress_url}; workers (health and metrics "
               f"port): {', '.join(f'{n} :{p}' for n, p in ports.items())}. Ctrl-C stops all.", err=True)
    if devpage is not None:
        click.echo(f"example page (the browser client at work) on {devpage.url}", err=True)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    click.echo(f"{name} exited with {proc.returncode}; stopping everything", err=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if devpage is not None:
            devpage.stop()
        if storage_server is not None:
            storage_server.stop()
