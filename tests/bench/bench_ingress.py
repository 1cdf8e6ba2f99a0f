"""Benchmark: confirmed publishes/s through the ingress against a minimal WSGI app (DESIGN §8).

    .venv/bin/python -m tests.bench.bench_ingress [--duration 10] [--connections 32]

Both run under ingress/gunicorn_conf.py with the same WEB_CONCURRENCY / GUNICORN_THREADS, loaded by
wrk with the same POST (token, seed event; re-sending one event is fine, the worker dedups).
The ingress publishes to a durable queue in a throwaway vhost, deleted afterwards.
Target: ingress req/s ≥ 0.5 × minimal app req/s (one event per request); p50/p99 reported.
A third run posts batches of --batch events per request and reports confirmed events/s.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EVENTS = "/api/v1/notify/events"
SECRET = "bench-secret-" + "x" * 40
_RESULT = re.compile(r"^RESULT (\d+) (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)$", re.M)

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%.1f %%.1f\\n", summary.requests, summary.duration,
    e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def minimal_app(environ, start_response):
    """The baseline: reads the body and answers 202 with a tiny JSON body, nothing else."""
    environ["wsgi.input"].read()
    body = b'{"accepted":[]}'
    start_response("202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


def _serve(app: str, port: int, env: dict, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "ingress/gunicorn_conf.py", app],
                            cwd=REPO, env={**os.environ, **env, "PORT": str(port)},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            # several tries: each fresh connection may land on another worker
            if all(_status(port, "/readyz") in (200, 202) for _ in range(6)):
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"{app} did not get ready; see {log}")


def _status(port: int, path: str) -> int:
    """The minimal app answers 202 to anything; the ingress 200 once its publisher is connected."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wrk(port: int, script: Path, duration: int, connections: int, threads: int) -> dict:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
                          "-s", str(script), f"http://127.0.0.1:{port}{EVENTS}"],
                         capture_output=True, text=True, check=True).stdout
    m = _RESULT.search(out)
    if not m:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    requests, duration_us, bad_status, socket_errors, p50, p99 = m.groups()
    ok = int(requests) - int(bad_status)
    return {"requests": int(requests), "ok": ok, "bad_status": int(bad_status), "socket_errors": int(socket_errors),
            "rps": ok / (int(duration_us) / 1e6), "p50_ms": float(p50) / 1000, "p99_ms": float(p99) / 1000}


def _measure(name, app, env, script, args, logdir) -> dict:
    port = _free_port()
    proc = _serve(app, port, env, logdir / f"{name}.log")
    try:
        _wrk(port, script, args.warmup, args.connections, args.wrk_threads)
        return _wrk(port, script, args.duration, args.connections, args.wrk_threads)
    finally:
        _stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", default=os.environ.get("WEB_CONCURRENCY", "2"))
    parser.add_argument("--threads", default=os.environ.get("GUNICORN_THREADS", "16"))
    parser.add_argument("--queue-type", choices=["classic", "quorum"], default="classic")
    parser.add_argument("--batch", type=int, default=10, help="events per request in the batch run (0: skip)")
    args = parser.parse_args()

    import jwt  # the minimal app is loaded from this module by gunicorn: keep its imports light
    import orjson
    import pika

    vhost = f"bench-{uuid.uuid4().hex[:10]}"
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    logdir = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        conn = pika.BlockingConnection(pika.URLParameters(url))
        channel = conn.channel()
        channel.exchange_declare("app.events", exchange_type="topic", durable=True)
        channel.queue_declare("bench", durable=True, arguments={"x-queue-type": args.queue_type})
        channel.queue_bind("bench", "app.events", routing_key="user.settings.submitted")

        user = str(uuid.uuid4())
        event = {"schema_version": "1.0.0", "event_type": "user.settings.submitted",
                 "client_generated_id": str(uuid.uuid4()), "user_id": user,
                 "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                 "source_service": "frontend",
                 "data": {"weight": {"value": 93.5, "unit": "kg"}, "age": 28, "training_days_per_week": 4}}
        token = jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
        script = logdir / "post.lua"
        script.write_text(WRK_SCRIPT % {"body": orjson.dumps(event).decode(), "token": token})
        batch_script = logdir / "post-batch.lua"  # distinct ids: the ingress refuses a repeated id in one batch
        batch_script.write_text(WRK_SCRIPT % {"token": token, "body": orjson.dumps(
            [{**event, "client_generated_id": str(uuid.uuid4())} for _ in range(args.batch)]).decode()})
        env = {"WEB_CONCURRENCY": args.workers, "GUNICORN_THREADS": args.threads, "RABBITMQ_URL": url,
               "JWT_SECRET": SECRET, "JWT_ALGORITHM": "HS256", "LOG_LEVEL": "INFO"}

        base = _measure("minimal", "tests.bench.bench_ingress:minimal_app", env, script, args, logdir)
        channel.queue_purge("bench")
        ingress = _measure("ingress", "ingress.app:application", env, script, args, logdir)
        queued = channel.queue_declare("bench", passive=True).method.message_count
        channel.queue_purge("bench")
        batched = _measure("ingress-batch", "ingress.app:application", env, batch_script, args, logdir) \
            if args.batch > 0 else None
        channel.queue_delete("bench")
        conn.close()
    finally:
        _rabbitmqctl("delete_vhost", vhost)

    ratio = ingress["rps"] / base["rps"] if base["rps"] else 0.0
    print(f"gunicorn gthread workers={args.workers} threads={args.threads}; wrk -t{args.wrk_threads} "
          f"-c{args.connections} -d{args.duration}s; queue {args.queue_type}, durable, persistent messages")
    for name, r in (("minimal WSGI app", base), ("ingress (auth+validation+confirm)", ingress)):
        print(f"  {name:<34} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
              f"  (non-2xx {r['bad_status']}, socket errors {r['socket_errors']})")
    # every 202 of the warm-up and the measured run is a confirmed message in the queue
    print(f"  messages in queue after the ingress runs: {queued}")
    print(f"  ratio ingress/minimal: {ratio:.2f} (target >= 0.5) -> {'OK' if ratio >= 0.5 else 'BELOW TARGET'}")
    if batched:
        events = batched["rps"] * args.batch
        print(f"  batches of {args.batch} events: {batched['rps']:.0f} req/s = {events:.0f} confirmed events/s "
              f"(p50 {batched['p50_ms']:.2f} ms, p99 {batched['p99_ms']:.2f} ms, non-2xx {batched['bad_status']}); "
              f"events/s vs minimal req/s: {events / base['rps']:.2f}")
    print(f"  logs: {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
