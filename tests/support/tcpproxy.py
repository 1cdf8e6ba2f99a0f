"""A loopback TCP proxy a test can cut and restore, so faults never touch the shared servers."""
from __future__ import annotations

import socket
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `cut()` drops every connection and refuses new
    ones until `restore()`. `stall()` keeps connections open but holds whatever the target
    sends until `resume()` (a server that stopped answering). `accepted` counts connection
    attempts that got through."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.accepted = 0
        self.blocked = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._answering = threading.Event()
        self._answering.set()
        # The listener stays bound while cut (new connections are closed at once): a closed port
        # could be taken by a client's own ephemeral port connecting to itself.
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, args=(self._listener,), daemon=True).start()

    def restore(self) -> None:
        self.blocked = False

    def stall(self) -> None:
        self._answering.clear()

    def resume(self) -> None:
        self._answering.set()

    def cut(self) -> None:
        self.blocked = True
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept_loop(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.accepted += 1
            with self._lock:
                self._conns += [client, upstream]
            for a, b, gate in ((client, upstream, None), (upstream, client, self._answering)):
                threading.Thread(target=self._pipe, args=(a, b, gate), daemon=True).start()

    def _pipe(self, src, dst, gate: threading.Event | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if gate is not None:
                    gate.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # only live pairs stay listed: a client that reconnected leaves no dead socket behind
            with self._lock:
                self._conns = [c for c in self._conns if c is not src and c is not dst]
