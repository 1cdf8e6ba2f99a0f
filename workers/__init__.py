"""Spotter's domain workers: name → module holding its WORKER spec (handler table)."""
from __future__ import annotations

import importlib

from shared.handler import WorkerSpec

WORKERS = {
    "ai": "workers.ai",
    "dm": "workers.dm",
    "machine": "workers.machine",
    "notify": "workers.notify",
    "program": "workers.program",
    "settings": "workers.settings",
    "transcode": "workers.transcode",
    "video": "workers.video",
}


def load(name: str) -> WorkerSpec:
    return importlib.import_module(WORKERS[name]).WORKER
