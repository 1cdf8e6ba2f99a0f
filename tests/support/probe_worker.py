"""A worker of the tests' own that emits an outcome event, run as a real process:

    python -m tests.support.probe_worker   (RABBITMQ_URL, DATABASE_URL, PROBE_EXIT_AFTER_COMMIT, …)

It lets the suite kill a process between commit and outbox publish whatever the domain
workers emit: with PROBE_EXIT_AFTER_COMMIT=1 the process dies as soon as a batch that wrote
outbox rows has committed, before the consumer publishes them (the fault lives here, in test
code, by wrapping the real processor). The database needs a `probe` table (see
tests/shared/test_outbox.py).
"""
from shared import contracts
from shared.config import Config
from workers.runtime.consumer import Consumer
from workers.runtime.handler import WorkerSpec
from shared.logging import setup_logging

contracts.data_schemas()["probe.recorded"] = {"type": "object", "x-producer": "probe",
                                              "properties": {"age": {"type": "integer"}}}


def record(ctx, event):
    ctx.cursor.execute("INSERT INTO probe (event_id, age) VALUES (%s, %s)", (event.id, event.data["age"]))
    ctx.emit("probe.recorded", {"age": event.data["age"]}, cause=event)


SPEC = WorkerSpec("probe", "probe", {"user.settings.submitted": record})

if __name__ == "__main__":
    import os
    setup_logging("probe")
    consumer = Consumer(SPEC, Config.from_env(), os.environ["DATABASE_URL"])
    if os.environ.get("PROBE_EXIT_AFTER_COMMIT"):
        commit = consumer.processor.process

        def commit_then_die(batch):
            verdicts, written = commit(batch)
            if written:  # committed, its outbox rows not yet published: crash like a killed pod
                os._exit(70)
            return verdicts, written
        consumer.processor.process = commit_then_die
    consumer.run()
