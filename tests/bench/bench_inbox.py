"""Benchmark: what 1,000 waiting inbox long polls cost one ingress process, and how fast they wake.

    .venv/bin/python -m tests.bench.bench_inbox [--waiters 1000] [--window 10]

One gunicorn gevent process and the notify worker, on a throwaway vhost and database. Baseline,
in the same run: the same ingress process after warm-up with no request open. Then --waiters
users each open `GET /api/v1/inbox?wait=25`; with all of them waiting, the process's resident
memory and its CPU time over --window seconds are compared with the idle baseline. Finally one
outcome event per user goes to app.events: the time from publish to each answer is the wake-up
latency (notify commits, emits inbox.updated, the ingress re-asks).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pika
import psycopg2

from tests.bench.bench_ingress import SECRET, _rabbitmqctl
from tests.support import auth

REPO = Path(__file__).resolve().parents[2]
PG = "postgresql://postgres@127.0.0.1:5432/"


def _proc_stats(pid: int) -> tuple[int, float]:
    """(resident KiB, CPU seconds) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gunicorn_worker(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


async def _poll(port: int, token: str, results: list, started: asyncio.Event | None = None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/v1/inbox?wait=25 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                 f"Connection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    results.append((time.monotonic(), raw.split(b" ", 2)[1], raw.rsplit(b"\r\n\r\n", 1)[-1]))
    writer.close()


def _wait_http(port: int, timeout: float = 30) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit("ingress did not become ready")


def _outcome(user: str) -> bytes:
    return orjson.dumps({"schema_version": "1.0.0", "event_type": "ai.response.failed",
                         "client_generated_id": str(uuid.uuid4()), "user_id": user,
                         "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                         "source_service": "ai", "data": {"prompt_id": str(uuid.uuid4()), "reason": "not_configured"}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    vhost, db = f"bench-{uuid.uuid4().hex[:10]}", f"notify_bench_{uuid.uuid4().hex[:10]}"
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    _rabbitmqctl("add_vhost", vhost)
    procs = []
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        port = 18000 + os.getpid() % 1000
        env = {**os.environ, "RABBITMQ_URL": url, "NOTIFY_DATABASE_URL": PG + db, **auth.ingress_env(SECRET),
               "PORT": str(port), "WEB_CONCURRENCY": "1", "HEALTH_PORT": "0", "LOG_LEVEL": "WARNING",
               "RATE_LIMIT_BURST": "1e12", "RATE_LIMIT_EVENTS_PER_S": "1e12"}
        run = [sys.executable, "-m", "workers"]
        subprocess.run([*run, "migrate", "notify", "--create"], env=env, cwd=REPO, check=True, capture_output=True)
        subprocess.run([*run, "topology"], env=env, cwd=REPO, check=True, capture_output=True)
        procs.append(subprocess.Popen([*run, "run", "notify"], env=env, cwd=REPO, stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn_conf.py",
                                       "ingress.app:application"], env=env, cwd=REPO, stdout=subprocess.DEVNULL))
        _wait_http(port)
        worker = _gunicorn_worker(procs[1].pid)
        users = [str(uuid.uuid4()) for _ in range(args.waiters)]
        tokens = [auth.encode(SECRET, u, ttl_s=3600) for u in users]
        results: list = []

        async def scenario():
            warm: list = []
            await asyncio.gather(*(_poll_nowait(port, t, warm) for t in tokens[:50]))
            await asyncio.sleep(1)
            rss0, cpu0 = _proc_stats(worker)
            await asyncio.sleep(args.window)
            rss1, cpu1 = _proc_stats(worker)
            tasks = [asyncio.create_task(_poll(port, t, results)) for t in tokens]
            await asyncio.sleep(3)  # every request asked once and is waiting now
            rss2, cpu2 = _proc_stats(worker)
            await asyncio.sleep(args.window)
            rss3, cpu3 = _proc_stats(worker)
            conn = pika.BlockingConnection(pika.URLParameters(url))
            channel = conn.channel()
            published = time.monotonic()
            for user in users:
                channel.basic_publish("app.events", "ai.response.failed", _outcome(user),
                                      pika.BasicProperties(content_type="application/json", delivery_mode=2))
            conn.close()
            await asyncio.gather(*tasks)
            return (rss0, cpu1 - cpu0, rss3, cpu3 - cpu2, published)

        rss_idle, cpu_idle, rss_wait, cpu_wait, published = asyncio.run(scenario())
        answered = [r for r in results if r[1] == b"200" and orjson.loads(r[2])["items"]]
        latencies = sorted(r[0] - published for r in answered)
        print(f"ingress: 1 gunicorn gevent process; {args.waiters} long polls (wait=25) by as many users")
        print(f"  resident memory: idle {rss_idle / 1024:.1f} MiB, with {args.waiters} waiting {rss_wait / 1024:.1f} MiB"
              f" -> {(rss_wait - rss_idle) / args.waiters:.1f} KiB a waiting request, ratio {rss_wait / rss_idle:.2f}")
        print(f"  CPU over {args.window:g} s: idle {cpu_idle:.2f} s, all waiting {cpu_wait:.2f} s "
              f"({100 * cpu_wait / args.window:.1f} % of a core)")
        print(f"  woken with their item: {len(answered)} of {args.waiters}; publish → answer p50 "
              f"{statistics.median(latencies) * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms "
              f"(one outcome per user, all published at once)" if latencies else "  none woken")
        return 0 if len(answered) == args.waiters else 1
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        _rabbitmqctl("delete_vhost", vhost)
        admin = psycopg2.connect(PG + "postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


async def _poll_nowait(port: int, token: str, results: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/v1/inbox HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                 f"Connection: close\r\n\r\n".encode())
    await writer.drain()
    results.append(await reader.read())
    writer.close()


if __name__ == "__main__":
    sys.exit(main())
