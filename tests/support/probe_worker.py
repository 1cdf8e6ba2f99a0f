"""A worker of the tests' own that emits an outcome event, run as a real process:

    python -m tests.support.probe_worker   (RABBITMQ_URL, DATABASE_URL, SPOTTER_FAULT, …)

It lets the suite kill a process between commit and outbox publish whatever the domain
workers emit. The database needs a `probe` table (see tests/shared/test_outbox.py).
"""
from shared import contracts
from shared.config import Config
from workers.runtime.consumer import Consumer
from workers.runtime.handler import WorkerSpec
from shared.logging import setup_logging

contracts.data_schemas()["probe.recorded"] = {"type": "object", "x-producer": "probe",
                                              "properties": {"age": {"type": "integer"}}}


def record(ctx, event):
    ctx.write("INSERT INTO probe (event_id, age) VALUES (%s, %s)", (event.id, event.data["age"]))
    ctx.emit("probe.recorded", {"age": event.data["age"]}, cause=event)


SPEC = WorkerSpec("probe", "probe", {"user.settings.submitted": record})

if __name__ == "__main__":
    import os
    setup_logging("probe")
    Consumer(SPEC, Config.from_env(), os.environ["DATABASE_URL"]).run()
