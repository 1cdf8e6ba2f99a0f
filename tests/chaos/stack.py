"""What a run is made of, and undone after it: a vhost and four databases of its own, K replicas
of each worker, an ingress, and the loopback proxies (tests/support/tcpproxy.py) every worker's
and the ingress's connections go through, so that one link can be cut without touching anyone
else's. The process and link faults are injected here; the broker's in tests/chaos/brokers.py,
PostgreSQL's in tests/chaos/postgres.py.

Every process runs in a session of its own: a Ctrl-C reaches the run, which stops them itself."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pika
import psycopg2

from shared.feedtokens import generate_keypair
from shared.logging import log
from tests.chaos import nemesis, postgres
from tests.chaos.brokers import LocalBroker
from tests.chaos.workload import OUTCOMES, WORKERS, Fixtures
from tests.support import auth
from tests.support.http import ready
from tests.support.net import free_port
from tests.support.tcpproxy import TcpProxy

REPO = Path(__file__).resolve().parents[2]
RETRY_DELAYS_S = "1,2,5"   # short, so a drain after retries takes seconds, not minutes
TAP = "chaos.outcomes"     # every outcome event the workers relay, to check the outbox


class Replica:
    """One `workers run <worker>` process, restartable; its log appended across restarts."""

    def __init__(self, worker: str, index: int, env: dict, logdir: Path):
        self.worker, self.index, self.env = worker, index, env
        self.name = f"{worker}#{index}"
        self.log_path = logdir / f"{worker}-{index}.log"
        self.proc: subprocess.Popen | None = None
        self.held = False      # the nemesis has it down on purpose: not a crash
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen([sys.executable, "-m", "workers", "run", self.worker], cwd=REPO,
                                         env={**os.environ, **self.env}, stdout=log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            _kill_group(self.proc.pid)
            self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Stack:
    def __init__(self, broker: LocalBroker, replicas: int, logdir: Path):
        self.broker, self.k, self.logdir = broker, replicas, logdir
        tag = uuid.uuid4().hex[:10]
        self.vhost = f"chaos-{tag}"
        self.db_names = {w: f"chaos_{w}_{tag}" for w in WORKERS}
        self.db_urls: dict[str, str] = {}
        self.proxies: dict[str, list[TcpProxy]] = {}   # link ("dm/amqp", "dm/pg", "ingress/amqp") → proxies
        self.replicas: list[Replica] = []
        self.ingress: subprocess.Popen | None = None
        self.port = 0
        self.jwt_secret = secrets.token_urlsafe(32)
        self.crashes: list[str] = []
        self._vhost_made = False
        self._watching = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The vhost straight at a running node (not through a proxy): for the run's own reads."""
        return self.broker.live_url(self.vhost)

    # ---- up -----------------------------------------------------------------------------------
    def up(self, fixtures: Fixtures) -> "Stack":
        self.broker.add_vhost(self.vhost)
        self._vhost_made = True
        for worker, name in self.db_names.items():
            self.db_urls[worker] = postgres.create(worker, name)
        private, public = generate_keypair()
        base = {"FEED_TOKEN_PRIVATE_KEY": private, "FEED_TOKEN_PUBLIC_KEY": public, "LOG_LEVEL": "INFO",
                "RETRY_DELAYS_S": RETRY_DELAYS_S, "OUTBOX_RELAY_INTERVAL_S": "1", "OUTBOX_RELAY_MIN_AGE_S": "2",
                "HEALTH_PORT": "0", "DRAIN_TIMEOUT_S": "10", "PYTHONUNBUFFERED": "1",
                # the start-up check of queue policies asks the management API (of every node)
                "RABBITMQ_MANAGEMENT_URL": self.broker.management_url}
        subprocess.run([sys.executable, "-m", "workers", "topology"], cwd=REPO, check=True, capture_output=True,
                       env={**os.environ, **base, "RABBITMQ_URL": self.broker.url(self.vhost)}, timeout=120)
        self._declare_tap()
        self._seed(fixtures)
        for link in [f"{w}/amqp" for w in WORKERS] + ["ingress/amqp"]:
            self.proxies[link] = [TcpProxy(host, port) for host, port in self.broker.addresses]
        for w in WORKERS:
            self.proxies[f"{w}/pg"] = [TcpProxy("127.0.0.1", 5432)]
        for w in WORKERS:
            env = {**base, "RABBITMQ_URL": self._via(f"{w}/amqp"),
                   f"{w.upper()}_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{self.proxies[f'{w}/pg'][0].port}/"
                                                f"{self.db_names[w]}"}
            self.replicas += [Replica(w, i, env, self.logdir) for i in range(self.k)]
        for r in self.replicas:
            r.start()
        self.port = free_port()
        ingress_env = {**os.environ, **base, **auth.ingress_env(self.jwt_secret), "RABBITMQ_URL": self._via("ingress/amqp"),
                       "PORT": str(self.port), "WEB_CONCURRENCY": "1",
                       "RATE_LIMIT_BURST": "1e12", "RATE_LIMIT_EVENTS_PER_S": "1e12"}
        with open(self.logdir / "ingress.log", "ab") as log_file:
            self.ingress = subprocess.Popen([sys.executable, "-m", "workers", "serve"], cwd=REPO, env=ingress_env,
                                            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait(lambda: ready(self.port), 60, "the ingress to be ready")
        for r in self.replicas:
            self._wait(lambda: "answering queries" in r.log_text(), 60, f"{r.name} to consume")
        threading.Thread(target=self._watch, name="replica-watch", daemon=True).start()
        return self

    def _via(self, link: str) -> str:
        return self.broker.url(self.vhost, [p.port for p in self.proxies[link]])

    def _declare_tap(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            ch = conn.channel()
            ch.queue_declare(TAP, durable=True, arguments={"x-queue-type": "quorum"})
            for routing_key in OUTCOMES.values():
                ch.queue_bind(TAP, "app.events", routing_key=routing_key)
        finally:
            conn.close()

    def _seed(self, fixtures: Fixtures) -> None:
        """Posts to comment on and conversations to write in, made as rows: their own events are not
        what this run counts."""
        with psycopg2.connect(self.db_urls["video"]) as conn, conn.cursor() as cur:
            for post_id, video_id, owner in fixtures.posts:
                cur.execute("INSERT INTO videos (video_id, owner_id, status, source_key, filename, content_type, "
                            "declared_size) VALUES (%s, %s, 'ready', %s, 'clip.mp4', 'video/mp4', 1000)",
                            (video_id, owner, f"uploads/{owner}/{video_id}/source"))
                cur.execute("INSERT INTO feed_posts (post_id, owner_id, video_id) VALUES (%s, %s, %s)",
                            (post_id, owner, video_id))
        with psycopg2.connect(self.db_urls["dm"]) as conn, conn.cursor() as cur:
            for conversation_id, members in fixtures.conversations:
                cur.execute("INSERT INTO conversations (conversation_id, started_by) VALUES (%s, %s)",
                            (conversation_id, members[0]))
                for member in members:
                    cur.execute("INSERT INTO participants (conversation_id, user_id) VALUES (%s, %s)",
                                (conversation_id, member))

    @staticmethod
    def _wait(predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)

    def _watch(self) -> None:
        """A replica that exits without the nemesis asking is a crash: noted, and started again."""
        self._watching.set()
        while self._watching.is_set():
            with self._lock:
                for r in self.replicas:
                    if not r.held and not r.alive():
                        self.crashes.append(f"{r.name} exited {r.proc.returncode}")
                        log.warning("replica crashed, restarting", replica=r.name, code=r.proc.returncode)
                        r.start()
            time.sleep(0.5)

    # ---- faults --------------------------------------------------------------------------------
    def targets(self) -> dict[str, list[str]]:
        names = [r.name for r in self.replicas]
        return {nemesis.KILL: names, nemesis.SIGTERM: names, nemesis.PG_RESTART: ["postgresql"],
                nemesis.CUT: sorted(self.proxies), **self.broker.targets()}

    def inject(self, fault: nemesis.Fault):
        if fault.kind in (nemesis.KILL, nemesis.SIGTERM):
            return self._signal(self._replica(fault.target), fault.kind)
        if fault.kind == nemesis.CUT:
            proxies = self.proxies[fault.target]
            for p in proxies:
                p.cut()
            return lambda: [p.restore() for p in proxies]
        if fault.kind == nemesis.PG_RESTART:
            return postgres.restart_immediate()
        return self.broker.inject(fault)

    def _replica(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def _signal(self, r: Replica, kind: str):
        with self._lock:
            r.held = True
            r.signal(signal.SIGKILL if kind == nemesis.KILL else signal.SIGTERM)

        def restart() -> None:
            # SIGTERM: the replica finishes (or hands back) its batch first, within DRAIN_TIMEOUT_S
            code = r.wait(40)
            with self._lock:
                if code is None:
                    self.crashes.append(f"{r.name} ignored SIGTERM for 40 s")
                    _kill_group(r.proc.pid)
                    r.proc.wait()
                elif kind == nemesis.SIGTERM and code not in (0, -signal.SIGTERM):
                    # -SIGTERM: it was still starting (no handler yet, nothing consumed)
                    self.crashes.append(f"{r.name} exited {code} on SIGTERM")
                r.start()
                r.held = False
        return restart

    def heal(self) -> None:
        """Every link open and every replica running, whatever a fault left."""
        for proxies in self.proxies.values():
            for p in proxies:
                p.restore()
        with self._lock:
            for r in self.replicas:
                if not r.alive():
                    r.start()
                r.held = False

    def replicas_alive(self) -> bool:
        return all(r.alive() for r in self.replicas)

    # ---- down ---------------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every process, close the proxies, drop the vhost and the databases. Each step runs
        whatever the previous one raised."""
        with self._lock:  # no restart of what is being stopped
            self._watching.clear()
            for r in self.replicas:
                r.held = True
        steps = [lambda r=r: r.stop() for r in self.replicas] + [self._stop_ingress]
        steps += [lambda p=p: p.close() for ps in self.proxies.values() for p in ps]
        if self._vhost_made:
            steps.append(lambda: self.broker.delete_vhost(self.vhost))
        steps += [lambda n=n: postgres.drop(n) for n in self.db_names.values()]
        for step in steps:
            try:
                step()
            except Exception as exc:
                log.warning("teardown step failed", error=f"{type(exc).__name__}: {exc}")

    def _stop_ingress(self) -> None:
        if self.ingress is None or self.ingress.poll() is not None:
            return
        self.ingress.terminate()
        try:
            self.ingress.wait(15)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(self.ingress.pid)  # gunicorn's workers too
        self.ingress.wait()
