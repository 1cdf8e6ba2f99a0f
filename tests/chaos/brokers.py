"""The broker a run uses, behind one small interface: the machine's own (LocalBroker), or a
three-node cluster on this machine (ClusterBroker, tests/chaos/cluster.py). The run asks it for
addresses, vhosts, queue depths and its faults; a cluster adds killing nodes and queue leaders.

Alarms restore exactly what was set before (read with rabbitmqctl eval before raising one), and
`heal()` puts every node back as it was found: app running, no alarm of ours left."""
from __future__ import annotations

import subprocess
import threading
import time
import urllib.parse

from tests.chaos import nemesis

MEMORY_READ = "vm_memory_monitor:get_vm_memory_high_watermark()."
DISK_READ = "rabbit_disk_monitor:get_disk_free_limit()."
USER = "guest:guest"


def memory_argument(printed: str) -> list[str]:
    """`rabbitmqctl set_vm_memory_high_watermark` arguments restoring what eval printed:
    `0.4` (a fraction) or `{absolute,1073741824}`."""
    printed = printed.strip()
    if printed.startswith("{absolute,"):
        return ["absolute", printed[len("{absolute,"):].rstrip("}").strip()]
    float(printed)  # refuse to restore anything we do not understand
    return [printed]


def disk_argument(printed: str) -> list[str]:
    """`rabbitmqctl set_disk_free_limit` arguments restoring what eval printed: bytes, or
    `{mem_relative,1.0}`."""
    printed = printed.strip()
    if printed.startswith("{mem_relative,"):
        return ["mem_relative", printed[len("{mem_relative,"):].rstrip("}").strip()]
    int(printed)
    return [printed]


class LocalBroker:
    """The machine's RabbitMQ on 127.0.0.1:5672."""

    name = "local"
    kinds = (nemesis.BROKER_RESTART, nemesis.MEMORY_ALARM, nemesis.DISK_ALARM)

    def __init__(self):
        self.addresses = [("127.0.0.1", 5672)]
        self.vhost = "/"  # the run's, once made: where queue leaders are looked up
        self._found: dict[int, tuple[str, str]] = {}  # node → (memory, disk) as found
        self._lock = threading.Lock()

    # ---- plumbing ---------------------------------------------------------------------------
    def nodes(self) -> list[int]:
        return [0]

    def ctl(self, node: int, *args: str, timeout: float = 60) -> str:
        return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                              timeout=timeout).stdout

    def start(self) -> "LocalBroker":
        self.ctl(0, "await_startup")
        self.remember()
        return self

    def stop(self) -> None:
        self.heal()

    @property
    def management_url(self) -> str:
        return "http://127.0.0.1:15672"

    def live_url(self, vhost: str) -> str:
        """One AMQP URL of the vhost, at a node that runs: for the run's own reads."""
        host, port = self.addresses[self.live_node()]
        return f"amqp://{USER}@{host}:{port}/{urllib.parse.quote(vhost, safe='')}"

    def url(self, vhost: str, ports: list[int] | None = None) -> str:
        """The vhost's AMQP URL(s), comma-separated; `ports`: one local proxy per address instead."""
        hosts = [f"127.0.0.1:{p}" for p in ports] if ports else [f"{h}:{p}" for h, p in self.addresses]
        return ",".join(f"amqp://{USER}@{h}/{urllib.parse.quote(vhost, safe='')}" for h in hosts)

    def add_vhost(self, vhost: str) -> None:
        self.vhost = vhost
        self.ctl(0, "add_vhost", vhost)
        self.ctl(0, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        try:
            self.ctl(self.live_node(), "delete_vhost", vhost)
        except subprocess.CalledProcessError:
            pass

    def live_node(self) -> int:
        return 0

    def queue_depths(self, vhost: str) -> dict[str, int]:
        """Messages (ready and unacknowledged) per queue, as the broker counts them now."""
        out = self.ctl(self.live_node(), "list_queues", "-p", vhost, "name", "messages", "--no-table-headers")
        depths = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths

    # ---- faults ------------------------------------------------------------------------------
    def targets(self) -> dict[str, list[str]]:
        return {kind: [str(n) for n in self.nodes()] for kind in self.kinds}

    def remember(self) -> None:
        """Read every node's watermark and disk limit as they are now: what heal() restores."""
        for node in self.nodes():
            self._found[node] = (self.ctl(node, "eval", MEMORY_READ), self.ctl(node, "eval", DISK_READ))

    def restart_app(self, node: int):
        self.ctl(node, "stop_app")
        return lambda: self._start_app(node)

    def _start_app(self, node: int) -> None:
        self.ctl(node, "start_app", timeout=120)
        self.ctl(node, "await_startup", timeout=120)

    def memory_alarm(self, node: int):
        before = self.ctl(node, "eval", MEMORY_READ)
        self.ctl(node, "set_vm_memory_high_watermark", "0.000001")
        return lambda: self.ctl(node, "set_vm_memory_high_watermark", *memory_argument(before))

    def disk_alarm(self, node: int):
        before = self.ctl(node, "eval", DISK_READ)
        self.ctl(node, "set_disk_free_limit", "1000GB")
        return lambda: self.ctl(node, "set_disk_free_limit", *disk_argument(before))

    def inject(self, fault: nemesis.Fault):
        node = int(fault.target)
        return {nemesis.BROKER_RESTART: self.restart_app, nemesis.MEMORY_ALARM: self.memory_alarm,
                nemesis.DISK_ALARM: self.disk_alarm}[fault.kind](node)

    def heal(self) -> None:
        """Every node's app running and its limits as found, whatever a fault left."""
        for node in self.nodes():
            self._revive(node)
            memory, disk = self._found.get(node, (None, None))
            if memory:
                self.ctl(node, "set_vm_memory_high_watermark", *memory_argument(memory))
            if disk:
                self.ctl(node, "set_disk_free_limit", *disk_argument(disk))

    def _revive(self, node: int) -> None:
        try:
            self._start_app(node)  # start_app on a running app is a no-op
        except subprocess.CalledProcessError:
            time.sleep(2)
            self._start_app(node)


class ClusterBroker(LocalBroker):
    """Three (or `size`) nodes on this machine (tests/chaos/cluster.py); the machine's broker is
    left alone. Adds killing a node (kill -9, then restart) and killing a queue's leader."""

    name = "cluster"
    kinds = LocalBroker.kinds + nemesis.CLUSTER_KINDS

    def __init__(self, size: int = 3):
        super().__init__()
        from tests.chaos.cluster import RabbitCluster  # written on the `cluster` branch
        self.size = size
        self.cluster = RabbitCluster(size=size)
        self._down: set[int] = set()

    def nodes(self) -> list[int]:
        return list(range(self.size))

    def start(self) -> "ClusterBroker":
        self.cluster.start()
        self.addresses = [(parts.hostname, parts.port) for parts in
                          (urllib.parse.urlsplit(u.strip()) for u in self.cluster.url.split(","))]
        self.remember()
        return self

    def stop(self) -> None:
        try:
            self.heal()
        finally:
            self.cluster.stop()

    def ctl(self, node: int, *args: str, timeout: float = 60) -> str:
        return self.cluster.rabbitmqctl(node, "-q", *args, timeout=timeout).stdout

    @property
    def management_url(self) -> str:
        return self.cluster.management_urls

    def live_node(self) -> int:
        return next(n for n in self.nodes() if n not in self._down)

    def targets(self) -> dict[str, list[str]]:
        targets = super().targets()
        targets[nemesis.LEADER_KILL] = ["settings", "program", "dm", "video"]
        return targets

    def inject(self, fault: nemesis.Fault):
        if fault.kind == nemesis.NODE_KILL:
            return self.kill_node(int(fault.target))
        if fault.kind == nemesis.LEADER_KILL:
            return self.kill_node(self.cluster.leader(fault.target, vhost=self.vhost))
        return super().inject(fault)

    def kill_node(self, node: int):
        self._down.add(node)
        self.cluster.kill(node)

        def restart():
            self.cluster.restart(node)
            self._down.discard(node)
        return restart

    def _revive(self, node: int) -> None:
        if node in self._down:
            self.cluster.restart(node)
            self._down.discard(node)
        super()._revive(node)
