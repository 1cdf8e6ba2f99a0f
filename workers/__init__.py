"""Spotter's domain workers: name → module holding its WORKER spec (handler table)."""
from __future__ import annotations

import importlib

from workers.runtime.handler import WorkerSpec

WORKERS = {
    "ai": "workers.ai.worker",
    "dm": "workers.dm.worker",
    "machine": "workers.machine.worker",
    "notify": "workers.notify.worker",
    "program": "workers.program.worker",
    "reminder": "workers.reminder.worker",
    "settings": "workers.settings.worker",
    "transcode": "workers.transcode.worker",
    "video": "workers.video.worker",
}


def load(name: str) -> WorkerSpec:
    return importlib.import_module(WORKERS[name]).WORKER
