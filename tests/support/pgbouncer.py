"""A PgBouncer of the tests' own (Debian's pgbouncer package) in TRANSACTION pooling mode, in
front of the local PostgreSQL: any database name is passed through (`*`), trust auth.

No `ignore_startup_parameters`: a client that sends `options` (session settings at connect)
is refused, which is what a production PgBouncer in this mode would make of it."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg2

BINARY = "/usr/sbin/pgbouncer"
DIRECT = "@127.0.0.1:5432/"


class PgBouncer:
    def __init__(self, port: int, proc: subprocess.Popen, workdir: str):
        self.port, self.proc, self.workdir = port, proc, workdir

    def url(self, direct_url: str) -> str:
        """The same database, through this PgBouncer."""
        assert DIRECT in direct_url, direct_url
        return direct_url.replace(DIRECT, f"@127.0.0.1:{self.port}/")

    def log(self) -> str:
        with open(os.path.join(self.workdir, "pgbouncer.log"), errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(pool_size: int = 2) -> PgBouncer:
    """Few server connections per database: clients take turns on them, so session state left by
    one transaction would show up in another client's."""
    workdir, port = tempfile.mkdtemp(prefix="pgbouncer-"), _free_port()
    with open(os.path.join(workdir, "users.txt"), "w") as f:
        f.write('"postgres" ""\n')
    config = f"""[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
server_reset_query =
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""
    if os.geteuid() == 0:  # pgbouncer refuses to run as root: it drops to `user`
        config += "user = postgres\n"
        postgres = pwd.getpwnam("postgres")
        os.chown(workdir, postgres.pw_uid, postgres.pw_gid)
    path = os.path.join(workdir, "pgbouncer.ini")
    with open(path, "w") as f:
        f.write(config)
    os.chmod(workdir, 0o755)
    proc = subprocess.Popen([BINARY, path], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    bouncer = PgBouncer(port, proc, workdir)
    deadline = time.monotonic() + 15
    while True:
        try:
            psycopg2.connect(bouncer.url("postgresql://postgres@127.0.0.1:5432/postgres"), connect_timeout=2).close()
            return bouncer
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                bouncer.stop()
                raise RuntimeError(f"pgbouncer did not start (exit {proc.poll()})")
            time.sleep(0.1)
