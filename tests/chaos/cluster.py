"""A RabbitMQ cluster of `size` nodes on this machine, beside its own broker, for fault tests.

    cluster = RabbitCluster(3).start()      # ~20-40 s on two cores; see docs/operations.md
    env = {"RABBITMQ_URL": cluster.url, "RABBITMQ_MANAGEMENT_URL": cluster.management_urls}
    cluster.kill(cluster.leader("settings")); cluster.restart(i)
    cluster.stop()

The machine's broker (rabbit@localhost: 5672, 15672, 25672, epmd on 4369, /var/lib/rabbitmq) is
left alone: the nodes are chaos-<i>@localhost with their own ports, data, logs, config, plugins
file and Erlang cookie under `workdir`, and an epmd of their own on a port of the block, so even
a restart of the machine's epmd does not touch them. They run as the current user straight from
/usr/lib/rabbitmq (not /usr/sbin's wrappers, which switch to the rabbitmq user and its HOME).

Each node runs in a session of its own: `kill` is SIGKILL to that process group (the script, the
Erlang VM and its erl_child_setup / inet_gethost children), never by name.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

RABBITMQ_HOME = Path("/usr/lib/rabbitmq")
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
COOKIE = "SPOTTERCHAOSCLUSTERCOOKIE"
# One small VM per node: one scheduler, few async threads (two cores run three nodes, workers,
# PostgreSQL). Distribution on loopback only, like the machine's broker.
ERL_ARGS = "+S 1:1 +A 4 -kernel inet_dist_use_interface {127,0,0,1}"
START_TIMEOUT_S = 120.0
# Ports, from first_port: AMQP +i, management +10+i, distribution +20+i, epmd +30,
# CLI distribution +31..+41 (each rabbitmqctl takes one while it runs)
SPAN = 42


class ClusterError(RuntimeError):
    pass


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_block(span: int = SPAN) -> int:
    """The first of `span` free ports, below Linux's ephemeral range (32768+): a client socket
    cannot take a killed node's port before it restarts."""
    for _ in range(200):
        first = random.randrange(20000, 32768 - span)
        if all(_bindable(first + i) for i in range(span)):
            return first
    raise ClusterError("no block of free ports between 20000 and 32768")


class RabbitCluster:
    def __init__(self, size: int = 3, workdir: Path | None = None, first_port: int | None = None):
        if not 1 <= size <= 10:
            raise ValueError("size: 1 to 10 nodes")
        self.size = size
        self.first_port = first_port if first_port is not None else free_block()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="rabbit-cluster-"))
        self.nodes: list[str] = [f"chaos-{i}@localhost" for i in range(size)]
        self._procs: list[subprocess.Popen | None] = [None] * size
        self._epmd: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # how long start() took, for the docs

    # ---- addresses -----------------------------------------------------------------------
    def amqp_port(self, i: int) -> int:
        return self.first_port + i

    def management_port(self, i: int) -> int:
        return self.first_port + 10 + i

    def dist_port(self, i: int) -> int:
        return self.first_port + 20 + i

    @property
    def epmd_port(self) -> int:
        return self.first_port + 30

    def amqp_url(self, i: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port(i)}/%2F"

    def management_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.management_port(i)}"

    @property
    def url(self) -> str:
        """Every node's AMQP URL, comma-separated: a RABBITMQ_URL."""
        return ",".join(self.amqp_url(i) for i in range(self.size))

    @property
    def management_urls(self) -> str:
        """Every node's management API, comma-separated: a RABBITMQ_MANAGEMENT_URL."""
        return ",".join(self.management_url(i) for i in range(self.size))

    # ---- life cycle ------------------------------------------------------------------------
    def start(self) -> "RabbitCluster":
        started = time.monotonic()
        try:
            self._start_epmd()
            for i in range(self.size):
                self._write_config(i)
                self._spawn(i)
            for i in range(self.size):
                self._await(i)
            for i in range(1, self.size):  # one at a time: concurrent joins contend on the schema
                self._join(i)
            self._await_members(self.size)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = round(time.monotonic() - started, 1)
        return self

    def stop(self) -> None:
        """Kill every node and our epmd, and remove the data. Safe to call twice."""
        for i in range(self.size):
            self.kill(i)
        if self._epmd is not None and self._epmd.poll() is None:
            self._epmd.kill()
            self._epmd.wait()
        self._epmd = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            for sub in ("mnesia", "log"):
                shutil.rmtree(self.workdir / sub, ignore_errors=True)

    def __enter__(self) -> "RabbitCluster":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def kill(self, i: int) -> None:
        """kill -9 of node i: the Erlang VM and everything in its process group, at once."""
        proc = self._procs[i]
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._procs[i] = None
        # a VM child that left the group (none known) would keep the ports: wait until they are free
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (_bindable(self.amqp_port(i)) and _bindable(self.dist_port(i))):
            time.sleep(0.1)

    def restart(self, i: int) -> None:
        """Start node i again on its data; it rejoins the cluster by itself. Returns once it runs
        and every live node sees it."""
        if self._procs[i] is not None and self._procs[i].poll() is None:
            raise ClusterError(f"{self.nodes[i]} is running")
        self._spawn(i)
        self._await(i)
        self._await_members(sum(self.is_running(n) for n in range(self.size)))

    def is_running(self, i: int) -> bool:
        """The node's process lives and its AMQP listener accepts (it opens after boot)."""
        proc = self._procs[i]
        if proc is None or proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.amqp_port(i)), timeout=1):
                return True
        except OSError:
            return False

    # ---- asking the nodes --------------------------------------------------------------------
    def rabbitmqctl(self, i: int, *args, tool: str = "rabbitmqctl", timeout: float = 60,
                    check: bool = True) -> subprocess.CompletedProcess:
        """`rabbitmqctl -n <node i> args…` (or rabbitmq-queues, rabbitmq-diagnostics with `tool`)."""
        result = subprocess.run([str(RABBITMQ_HOME / "bin" / tool), "-n", self.nodes[i], *map(str, args)],
                                env=self._env(i), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"{tool} -n {self.nodes[i]} {' '.join(map(str, args))} failed "
                               f"({result.returncode}): {result.stdout.strip()} {result.stderr.strip()}"[:2000])
        return result

    def leader(self, queue: str, vhost: str = "/") -> int:
        """Index of the node leading quorum queue `queue`, asked of a running node."""
        for member in self.quorum_status(queue, vhost):
            if str(member.get("Raft State")) == "leader":
                return self.nodes.index(member["Node Name"])
        raise ClusterError(f"quorum queue {queue!r} has no leader now")

    def members(self, queue: str, vhost: str = "/") -> list[int]:
        """Indexes of the nodes holding a replica of quorum queue `queue`."""
        return sorted(self.nodes.index(m["Node Name"]) for m in self.quorum_status(queue, vhost))

    def quorum_status(self, queue: str, vhost: str = "/") -> list[dict]:
        i = self._a_running_node()
        out = self.rabbitmqctl(i, "quorum_status", queue, "--vhost", vhost, "--formatter", "json",
                               tool="rabbitmq-queues").stdout
        return json.loads(out[out.index("["):])

    def _a_running_node(self) -> int:
        running = [i for i in range(self.size) if self.is_running(i)]
        if not running:
            raise ClusterError("no node is running")
        return running[0]

    # ---- internals -----------------------------------------------------------------------------
    def _env(self, i: int) -> dict:
        node = self.workdir / "node" / str(i)
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(self.workdir),  # .erlang.cookie, shared by the nodes and our CLI calls
            "RABBITMQ_CONF_ENV_FILE": str(node / "rabbitmq-env.conf"),  # not /etc/rabbitmq's (rabbit@localhost)
            "RABBITMQ_NODENAME": self.nodes[i],
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port(i)),
            "RABBITMQ_DIST_PORT": str(self.dist_port(i)),
            "RABBITMQ_CONFIG_FILE": str(node / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node / "advanced.config"),  # absent: none
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_PID_FILE": str(node / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": ERL_ARGS,
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.first_port + 31),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.first_port + 41),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _start_epmd(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cookie = self.workdir / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(COOKIE)
        cookie.chmod(0o400)
        self._epmd = subprocess.Popen([EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while _bindable(self.epmd_port):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"epmd did not start on port {self.epmd_port}")
            time.sleep(0.05)

    def _write_config(self, i: int) -> None:
        node = self.workdir / "node" / str(i)
        node.mkdir(parents=True, exist_ok=True)
        (node / "rabbitmq-env.conf").write_text("")
        (node / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (node / "rabbitmq.conf").write_text("\n".join([
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port(i)}",
            f"management.tcp.port = {self.management_port(i)}",
            "management.tcp.ip = 127.0.0.1",
            "log.console = false",
            "log.file.level = info",
            "disk_free_limit.absolute = 50MB",
            "",
        ]))

    def _spawn(self, i: int) -> None:
        log = open(self.workdir / "node" / str(i) / "console.log", "ab")
        self._procs[i] = subprocess.Popen([str(RABBITMQ_HOME / "bin" / "rabbitmq-server")], env=self._env(i),
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        log.close()

    def _await(self, i: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.is_running(i):
            proc = self._procs[i]
            if proc is None or proc.poll() is not None:
                raise ClusterError(f"{self.nodes[i]} exited while starting: {self._tail(i)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.nodes[i]} did not start in {START_TIMEOUT_S:.0f} s: {self._tail(i)}")
            time.sleep(0.25)
        self.rabbitmqctl(i, "await_startup", "--timeout", int(START_TIMEOUT_S))

    def _join(self, i: int) -> None:
        self.rabbitmqctl(i, "stop_app")
        self.rabbitmqctl(i, "join_cluster", self.nodes[0])
        self.rabbitmqctl(i, "start_app")

    def _await_members(self, count: int) -> None:
        """Until a running node reports `count` running members (management API: no CLI boot)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        seen = None
        while time.monotonic() < deadline:
            try:
                i = self._a_running_node()
                seen = sum(1 for n in self._api(i, "/api/nodes") if n.get("running"))
                if seen >= count:
                    return
            except (OSError, ValueError, ClusterError):
                pass
            time.sleep(0.5)
        raise ClusterError(f"only {seen} of {count} nodes run in the cluster")

    def _api(self, i: int, path: str):
        import base64
        import urllib.request
        request = urllib.request.Request(self.management_url(i) + path,
                                         headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def _tail(self, i: int, lines: int = 15) -> str:
        texts = []
        for path in (self.workdir / "node" / str(i) / "console.log", self.workdir / "log" / f"{self.nodes[i]}.log"):
            if path.exists():
                texts.append("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)[-3000:]
