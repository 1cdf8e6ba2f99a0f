"""Gunicorn settings for the ingress. From the repository root:

    gunicorn -c ingress/gunicorn_conf.py ingress.app:application

Environment: PORT (8080), WEB_CONCURRENCY worker processes (2), GUNICORN_THREADS per worker (16),
plus the app's own (RABBITMQ_URL, JWT_*, …; see shared/config.py).
"""
import os

worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# A request thread mostly waits for its publisher confirm, so threads ≫ cores keeps the
# confirms of many requests in flight together.
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
timeout = 30
graceful_timeout = 10   # requests last at most publish_timeout_s; stay inside the pod's grace period
keepalive = 5
accesslog = None        # the app logs one JSON line per request
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "warning")
preload_app = False     # the app (and its broker connection) is built in each worker, after the fork
worker_tmp_dir = "/dev/shm"  # heartbeat file: not on a disk, and works with a read-only root


def post_worker_init(worker):
    """Connect this worker's publisher before it takes requests (bounded wait; /readyz tells)."""
    warm = getattr(worker.wsgi, "warm", None)
    if warm is not None:
        warm()


def worker_exit(server, worker):
    close = getattr(getattr(worker, "wsgi", None), "close", None)
    if close is not None:
        close()
