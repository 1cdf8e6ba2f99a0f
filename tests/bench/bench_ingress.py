"""Benchmark: confirmed publishes/s through the ingress against a minimal WSGI app (DESIGN §8).

    .venv/bin/python -m tests.bench.bench_ingress [--processes 1,2] [--rounds 3] [--duration 5]

Both run under ingress/gunicorn_conf.py (gevent) with the same WEB_CONCURRENCY, loaded by wrk
with the same POST (token, seed event; re-sending one event is fine, the worker dedups) over
--connections keep-alive connections. The ingress publishes persistent messages to a durable
queue in a throwaway vhost, deleted afterwards: a quorum queue, as the workers' queues are
(a classic queue's index flushes stall the broker's confirms for 20–70 ms about twice a second).

This machine's speed drifts by ±15 % from one run to the next, so the two apps are measured in
alternating rounds and the median of the per-round ratios is reported. Each process count is
its own comparison: with 1 process the broker mostly has the other core (in production it runs
on other machines; here RabbitMQ binds one scheduler thread to each core, see docs/performance.md);
with 2 the ingress shares both cores with the broker while the minimal app has them alone.
Target: ingress req/s ≥ 0.5 × minimal app req/s, one event per request; p50/p99 reported.
Then batches of --batch events per request: confirmed events/s. Every 202 must be a message in
the queue: counted after each round.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
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
SECRET = "bench-secret-7c1d0e9a4b3f8e2d6a5c9b1f0e4d3a2b"  # 45 bytes: the ingress refuses HS keys under 32
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
    """A gunicorn with ingress/gunicorn_conf.py serving `app`, once it answers /readyz."""
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


def _compare(processes: int, env: dict, scripts: dict, args, channel, logdir: Path) -> dict:
    """Alternating rounds of the minimal app and the ingress, both up on their own ports."""
    env = {**env, "WEB_CONCURRENCY": str(processes)}
    ports = {"minimal": _free_port(), "ingress": _free_port()}
    procs = {"minimal": _serve("tests.bench.bench_ingress:minimal_app", ports["minimal"], env,
                               logdir / f"minimal-{processes}.log"),
             "ingress": _serve("ingress.app:application", ports["ingress"], env, logdir / f"ingress-{processes}.log")}
    rounds, unconfirmed = [], 0
    try:
        for name in procs:
            _wrk(ports[name], scripts["single"], args.warmup, args.connections, args.wrk_threads)
        for _ in range(args.rounds):
            minimal = _wrk(ports["minimal"], scripts["single"], args.duration, args.connections, args.wrk_threads)
            channel.queue_purge("bench")
            ingress = _wrk(ports["ingress"], scripts["single"], args.duration, args.connections, args.wrk_threads)
            # a 202 is sent only after the broker confirmed: the queue holds at least every one
            queued = channel.queue_declare("bench", passive=True).method.message_count
            unconfirmed += max(0, ingress["ok"] - queued)
            rounds.append((minimal, ingress))
        batched = None
        if args.batch > 0 and processes == min(args.processes):
            channel.queue_purge("bench")
            batched = _wrk(ports["ingress"], scripts["batch"], args.duration, args.connections, args.wrk_threads)
            queued = channel.queue_declare("bench", passive=True).method.message_count
            unconfirmed += max(0, batched["ok"] * args.batch - queued)
        channel.queue_purge("bench")
    finally:
        for proc in procs.values():
            _stop(proc)
    middle = sorted(rounds, key=lambda r: r[1]["rps"] / r[0]["rps"])[len(rounds) // 2]
    return {"processes": processes, "ratio": statistics.median([i["rps"] / m["rps"] for m, i in rounds]),
            "minimal": middle[0], "ingress": middle[1],
            "minimal_range": (min(m["rps"] for m, _ in rounds), max(m["rps"] for m, _ in rounds)),
            "ingress_range": (min(i["rps"] for _, i in rounds), max(i["rps"] for _, i in rounds)),
            "errors": sum(r["bad_status"] + r["socket_errors"] for pair in rounds for r in pair),
            "unconfirmed": unconfirmed, "batched": batched}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="gunicorn process counts to compare at (WEB_CONCURRENCY)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per process count")
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per app per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--queue-type", choices=["classic", "quorum"], default="quorum")
    parser.add_argument("--batch", type=int, default=10, help="events per request in the batch run (0: skip)")
    args = parser.parse_args()
    args.processes = [int(p) for p in args.processes.split(",")]

    import orjson  # the minimal app is loaded from this module by gunicorn: keep its imports light
    import pika

    from tests.support import auth

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
        token = auth.encode(SECRET, user, ttl_s=3600)
        scripts = {"single": logdir / "post.lua", "batch": logdir / "post-batch.lua"}
        scripts["single"].write_text(WRK_SCRIPT % {"body": orjson.dumps(event).decode(), "token": token})
        # distinct ids: the ingress refuses a repeated id in one batch
        scripts["batch"].write_text(WRK_SCRIPT % {"token": token, "body": orjson.dumps(
            [{**event, "client_generated_id": str(uuid.uuid4())} for _ in range(args.batch)]).decode()})
        # wrk posts as one user: the per-user limit still runs on every request, sized never to bite
        env = {"RABBITMQ_URL": url, **auth.ingress_env(SECRET), "LOG_LEVEL": "INFO",
               "RATE_LIMIT_BURST": "1e12", "RATE_LIMIT_EVENTS_PER_S": "1e12"}
        results = [_compare(p, env, scripts, args, channel, logdir) for p in args.processes]
        channel.queue_delete("bench")
        conn.close()
    finally:
        _rabbitmqctl("delete_vhost", vhost)

    print(f"gunicorn gevent; wrk -t{args.wrk_threads} -c{args.connections}, {args.rounds} alternating rounds of "
          f"{args.duration}s per app; {args.queue_type} durable queue, persistent messages")
    for r in results:
        print(f"{r['processes']} process(es), median round:")
        for name in ("minimal", "ingress"):
            m, (low, high) = r[name], r[f"{name}_range"]
            label = "minimal WSGI app" if name == "minimal" else "ingress (auth+validation+confirm)"
            print(f"  {label:<34} {m['rps']:>6.0f} req/s  p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:7.2f} ms"
                  f"  (rounds {low:.0f}–{high:.0f})")
        verdict = "OK" if r["ratio"] >= 0.5 else "BELOW TARGET"
        print(f"  ratio ingress/minimal (median of rounds): {r['ratio']:.2f} (target >= 0.5) -> {verdict}")
        print(f"  non-2xx or socket errors: {r['errors']}; 202s without their message in the queue: {r['unconfirmed']}")
        b = r["batched"]
        if b:
            events = b["rps"] * args.batch
            print(f"  batches of {args.batch} events: {b['rps']:.0f} req/s = {events:.0f} confirmed events/s "
                  f"(p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms); "
                  f"events/s vs minimal req/s: {events / r['minimal']['rps']:.2f}")
    print(f"  logs: {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
