"""A worker told to stop while the database is down hands its held batch back, and acks nothing
it did not commit (found by bin/chaos, seed 1009: 224 comments confirmed and never applied).

The batch held during the outage used to be left unsettled on purpose, for the broker to redeliver
after the restart. But the worker drains what it prefetched before it exits: when the database
came back meanwhile, the next batch was committed and acked with one multiple-ack up to its last
tag, which acked the held batch too. Its messages left the queue without ever being applied."""
from __future__ import annotations

import signal
import time

from tests.support.db import query
from tests.support.events import dumps, event
from tests.support.probe import consuming
from tests.support.rabbit import wait_for
from tests.support.tcpproxy import TcpProxy


def test_sigterm_while_a_batch_waits_for_the_database_loses_none_of_it(start_worker, make_database, rmq, base_env):
    from tests.support.processes import run_cli
    run_cli("topology", env=base_env)
    db = make_database("settings")
    proxy = TcpProxy("127.0.0.1", 5432)
    # prefetch 40: a batch of 20 held, 20 more prefetched behind it
    worker = start_worker("settings", SETTINGS_DATABASE_URL=db.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"),
                          PREFETCH=40, DRAIN_TIMEOUT_S=20)
    consuming(worker)
    proxy.cut()
    events = [event() for _ in range(100)]
    for e in events:
        rmq.publish("app.events", "user.settings.submitted", dumps(e), message_id=e["client_generated_id"])
    # Given a batch held through the outage, its next attempt hanging in connect (the proxy stalls)
    wait_for(lambda: any(l.get("msg") == "database unavailable, holding batch" for l in worker.logs()),
             message="a batch held through the outage")
    attempts = proxy.accepted
    proxy.stall()
    proxy.restore()
    wait_for(lambda: proxy.accepted > attempts, message="the held batch trying the database again")
    # When the pod is told to stop, that attempt fails, and the database is back for the next batch
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    proxy.cut()
    proxy.restore()
    proxy.resume()
    assert worker.proc.wait(30) == 0
    # Then a fresh worker finds every event not applied still queued: all 100 land, once each
    start_worker("settings", SETTINGS_DATABASE_URL=db)
    wait_for(lambda: rmq.depth("settings") == 0 and query(db, "SELECT count(*) FROM user_settings")[0][0] == 100,
             timeout=40, message=f"every event applied: {query(db, 'SELECT count(*) FROM user_settings')[0][0]}")
    assert query(db, "SELECT count(*) FROM idempotency_keys")[0][0] == 100
    assert rmq.depth("settings.dead") == 0
    proxy.close()
