"""Gunicorn settings for the ingress. From the repository root:

    gunicorn -c ingress/gunicorn_conf.py ingress.app:application

Environment: PORT (8080), WEB_CONCURRENCY worker processes (1), GUNICORN_WORKER_CONNECTIONS
concurrent requests per process (1000), PROMETHEUS_MULTIPROC_DIR (a fresh directory per master
when unset; set it to an emptyDir where the root is read-only and /dev/shm is not there), plus
the app's own (RABBITMQ_URL, JWT_*, EVENT_ID_KEY, …; see shared/config.py; checked at start by
shared/secrets.py).
"""
import glob
import os
import shutil
import tempfile

from shared.logging import log, setup_logging

# First of all: whatever the master and its workers write from here on (gunicorn's arbiter via
# logger_class below, library records, warnings such as gevent's MonkeyPatchWarning, a crash)
# is one JSON line on stdout. JsonLogger.setup re-applies it with GUNICORN_LOG_LEVEL.
setup_logging("ingress", os.environ.get("LOG_LEVEL") or "INFO")

from shared import secrets  # noqa: E402

# Before anything else, in the master: no start with a missing, placeholder or weak secret, or
# without JWT_ISSUER/JWT_AUDIENCE (unless waived); `refusing to start` names the variable, exit 2.
secrets.enforce("ingress")

# /metrics adds up every worker process's values (ingress/metrics.py). The directory must be
# known before prometheus_client is first imported, here in the master, before any fork.
_METRICS_PREFIX = "spotter-ingress-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix=_METRICS_PREFIX, dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)

from prometheus_client import multiprocess  # noqa: E402  (after the directory is set)

from ingress import server  # noqa: E402

server.answer_errors_in_json()  # in the master: the workers it forks inherit it

# A request mostly waits for its publisher confirm (the broker syncs to disk first), so many
# must be in flight at once. As greenlets they cost no thread switches and no GIL contention,
# and they publish on the process's connection directly (ingress/publisher.py): with 2 × 16
# threads (gthread) the same machine confirmed about half as many requests per second.
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))  # one per core the process may use
# inbox long polls (GET /api/v1/inbox?wait=…) hold their connection up to 25 s each: room for
# thousands of them beside the requests that publish
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "4000"))
bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
timeout = 30
graceful_timeout = 10   # requests last at most publish_timeout_s; stay inside the pod's grace period
keepalive = 5
accesslog = None        # the app logs one JSON line per request
errorlog = "-"
logger_class = "ingress.server.JsonLogger"  # gunicorn's own lines as JSON on stdout
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "warning")
preload_app = False     # the app (and its broker connection) is built in each worker, after the fork
worker_tmp_dir = "/dev/shm"  # heartbeat file: not on a disk, and works with a read-only root


def _greenlet_failure(hub, context, exc_type, exc, tb) -> None:
    """gevent's Hub.print_exception: a greenlet that died of an exception, as one JSON line
    (gevent writes a raw traceback and a timestamp to stderr)."""
    failed = log.bind(logger="gevent.hub", context=repr(context)[:200])
    if exc is None:  # gevent may pass the type alone
        failed.error("greenlet failed", exception=getattr(exc_type, "__name__", str(exc_type)))
    else:
        failed.opt(exception=(type(exc), exc, tb)).error("greenlet failed")


def post_fork(server, worker):
    from gevent.hub import Hub
    Hub.print_exception = _greenlet_failure


def on_starting(server):
    """Counts start at zero with the master: files a previous master left would be added in."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def on_exit(server):
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if os.path.basename(directory).startswith(_METRICS_PREFIX):  # ours, not an operator's
        shutil.rmtree(directory, ignore_errors=True)


def child_exit(server, worker):
    """A dead worker's counters stay in the sums; only its live gauges go."""
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Connect this worker's publisher before it takes requests (bounded wait; /readyz tells)."""
    warm = getattr(worker.wsgi, "warm", None)
    if warm is not None:
        warm()


def worker_exit(server, worker):
    close = getattr(getattr(worker, "wsgi", None), "close", None)
    if close is not None:
        close()
