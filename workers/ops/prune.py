"""`workers prune`: delete what is past its retention (workers/ops/retention.py), a bounded batch at a time.

Per database (migrations/<domain>):
- every one: `idempotency_keys` older than IDEMPOTENCY_RETENTION_S, `rejections` older than
  REJECTION_RETENTION_S (the two kinds of receipt, workers/runtime/receipts.py)
- settings: rate-limit rows whose window ended (`feed_access_limits`, `access_limits`): the
  counting upsert would start that row over anyway (workers/settings/access_limits.py)
- video: `feed_access_grants` past expires_at; uploads left in `pending_upload` for
  ABANDONED_UPLOAD_RETENTION_S (row and object); the source object of a video settled (ready or
  failed) for SOURCE_RETENTION_S, marked gone in `videos.source_deleted_at`
- notify: inbox items older than INBOX_RETENTION_S (workers/notify/worker.py prune_inbox)
- reminder: reminders with nothing left to fire (cancelled, or a one-off decided) unchanged for
  IDEMPOTENCY_RETENTION_S: a cancel's tombstone outlives every copy of an event the runtime
  would still recognise, so only a set sent that long after its cancel could bring one back
The outbox needs nothing: a row goes once the broker confirmed it, and one left is unpublished.

Each batch is its own short transaction: at most PRUNE_BATCH rows, locked with SKIP LOCKED (a
row a worker holds is left for the next run, never waited for) under lock_timeout; a video
batch holds its rows only while it deletes their objects (at most OBJECT_BATCH of them).
Cut-offs are taken from the database's clock, as the workers' own comparisons are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

import orjson

from workers.ops.podhealth import redact
from workers.ops.retention import RetentionConfig, cutoff
from workers.runtime import db

# videos per transaction on the bucket paths (or PRUNE_BATCH if smaller): their row locks last
# one HEAD and one DELETE per video
OBJECT_BATCH = 100


@dataclass
class Result:
    """One output line: a table (or bucket prefix) of one database, and what was (or would be) removed."""

    database: str
    target: str
    count: int | None = None
    error: str | None = None

    def line(self, dry_run: bool) -> str:
        if self.error is not None:
            return f"{self.database} {self.target}: FAILED: {self.error}"
        return f"{self.database} {self.target}: {self.count} {'would be removed' if dry_run else 'removed'}"

    def json(self, dry_run: bool) -> str:
        body = {"database": self.database, "target": self.target, "dry_run": dry_run}
        body.update({"error": self.error} if self.error is not None
                    else {"would_remove" if dry_run else "removed": self.count})
        return orjson.dumps(body).decode()


@dataclass(frozen=True)
class Rows:
    """Rows of `table` matching `where` (named parameters), deleted oldest first by `order`."""

    table: str
    where: str
    params: dict
    order: str = ""
    label: str = ""
    delete_batch: Callable | None = field(default=None, compare=False)  # (conn, batch) → deleted, instead of ours

    @property
    def target(self) -> str:
        return self.label or self.table

    def count(self, conn) -> int:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self.table} WHERE {self.where}", self.params)
            return cur.fetchone()[0]

    def delete(self, conn, batch: int) -> int:
        if self.delete_batch is not None:
            return self.delete_batch(conn, batch)
        # ctid = ANY(ARRAY(...)): a TID scan of exactly the rows the bounded subquery locked
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self.table} WHERE ctid = ANY(ARRAY("
                        f"SELECT ctid FROM {self.table} WHERE {self.where} {self.order} "
                        f"LIMIT %(batch)s FOR UPDATE SKIP LOCKED))", {**self.params, "batch": batch})
            return cur.rowcount


def row_targets(domain: str, now: datetime, retention: RetentionConfig) -> list[Rows]:
    """What of this database's tables has a lifetime, with the cut-offs at `now` (the database's clock)."""
    targets = [
        Rows("idempotency_keys", "processed_at < %(cutoff)s", {"cutoff": cutoff(now, retention.idempotency_s)},
             "ORDER BY processed_at"),
        Rows("rejections", "rejected_at < %(cutoff)s", {"cutoff": cutoff(now, retention.rejection_s)}),
    ]
    if domain == "settings":
        from workers.settings.access_limits import Limits
        lim = Limits.from_env()
        # expired as the counting upsert decides: window_start <= now - window
        targets += [
            Rows("feed_access_limits", "window_start <= %(cutoff)s", {"cutoff": cutoff(now, lim.window_s)}),
            Rows("access_limits", "(scope = 'visibility' AND window_start <= %(changes)s) "
                                  "OR (scope <> 'visibility' AND window_start <= %(failures)s)",
                 {"changes": cutoff(now, lim.changes_window_s), "failures": cutoff(now, lim.window_s)}),
        ]
    if domain == "video":
        # a grant counts while expires_at > now() (workers/video/feed_reads.py)
        targets.append(Rows("feed_access_grants", "expires_at <= %(now)s", {"now": now}))
    if domain == "notify":
        from workers.notify.worker import limits, prune_inbox
        retention_s = limits().retention_s
        targets.append(Rows("inbox_items", "at < %(cutoff)s", {"cutoff": cutoff(now, retention_s)},
                            delete_batch=lambda conn, batch: prune_inbox(conn, now, retention_s, batch)))
    if domain == "reminder":
        targets.append(Rows("reminders", "next_due IS NULL AND updated_at < %(cutoff)s",
                            {"cutoff": cutoff(now, retention.idempotency_s)}))
    return targets


class Pruner:
    def __init__(self, retention: RetentionConfig, dry_run: bool, storage: Callable | None = None):
        """`storage`: builds the bucket client (workers/runtime/storage.Storage) when the video database needs it."""
        self.retention, self.dry_run = retention, dry_run
        self._storage_factory, self._storage = storage, None

    # ---- per database ----------------------------------------------------------------------

    def database(self, domain: str, url: str) -> list[Result]:
        try:
            conn = db.connect(url, application_name="workers-prune")
        except Exception as exc:  # unreachable, missing, refused: say so and let the others go on
            return [Result(domain, "database", error=f"unreachable: {type(exc).__name__}: {redact(exc)}")]
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT now()")
                now = cur.fetchone()[0]
            conn.commit()
            results = [self._rows(conn, domain, t) for t in row_targets(domain, now, self.retention)]
            if domain == "video":
                results += self._videos(conn, now)
            return results
        finally:
            conn.close()

    def _rows(self, conn, domain: str, target: Rows) -> Result:
        try:
            if self.dry_run:
                count = self._in_transaction(conn, target.count)
            else:
                count, n = 0, self.retention.batch
                while n == self.retention.batch:  # a short batch: nothing (unlocked) is left
                    n = self._in_transaction(conn, lambda c: target.delete(c, self.retention.batch))
                    count += n
            return Result(domain, target.target, count)
        except Exception as exc:  # a lock timeout, a missing table: this line fails, the rest go on
            return Result(domain, target.target, error=f"{type(exc).__name__}: {redact(exc)}")

    def _in_transaction(self, conn, work: Callable):
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET LOCAL lock_timeout = {int(self.retention.lock_timeout_ms)}; "
                            "SET LOCAL statement_timeout = 60000")
            result = work(conn)
            conn.commit()
            return result
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise

    # ---- the bucket ------------------------------------------------------------------------

    def _videos(self, conn, now: datetime) -> list[Result]:
        """Abandoned uploads (rows and objects deleted) and settled videos' sources (objects deleted, rows marked)."""
        try:
            storage = self._bucket()
        except Exception as exc:
            return [Result("video", "bucket", error=f"storage not usable: {type(exc).__name__}: {redact(exc)}")]
        prefix = f"s3://{storage.cfg.bucket}/uploads/"
        kinds = [
            # never completed within ABANDONED_UPLOAD_RETENTION_S of its (last) form: row and object go
            ("videos (abandoned uploads)", f"{prefix} (abandoned uploads)",
             "status = 'pending_upload' AND updated_at < %(cutoff)s", cutoff(now, self.retention.abandoned_upload_s),
             "DELETE FROM videos WHERE video_id = ANY(%s::uuid[]) AND status = 'pending_upload'"),
            # settled (updated_at is when) SOURCE_RETENTION_S ago: the object goes, the row says so
            (None, f"{prefix} (sources of ready or failed videos)",
             "status IN ('ready', 'failed') AND source_deleted_at IS NULL AND updated_at < %(cutoff)s",
             cutoff(now, self.retention.source_s),
             "UPDATE videos SET source_deleted_at = now() WHERE video_id = ANY(%s::uuid[])"),
        ]
        results = []
        for rows_label, objects_label, where, before, settle in kinds:
            labels = [label for label in (rows_label, objects_label) if label]  # a marked row is no removal: no line
            try:
                rows, objects = self._video_kind(conn, storage, where, before, settle)
                results += [Result("video", label, n) for label, n in zip(labels, (rows, objects)[-len(labels):])]
            except Exception as exc:  # the bucket or the database failed: this batch was rolled back
                results += [Result("video", label, error=f"{type(exc).__name__}: {redact(exc)}") for label in labels]
        return results

    def _video_kind(self, conn, storage, where: str, before: datetime, settle: str) -> tuple[int, int]:
        select = f"SELECT video_id::text, source_key FROM videos WHERE {where} ORDER BY updated_at"
        if self.dry_run:
            found = self._in_transaction(conn, lambda c: _fetch(c, select, {"cutoff": before}))
            return len(found), sum(storage.head(key) is not None for _, key in found)
        rows, objects, size = 0, 0, min(OBJECT_BATCH, self.retention.batch)
        while True:
            def batch(c):
                found = _fetch(c, f"{select} LIMIT %(batch)s FOR UPDATE SKIP LOCKED",
                               {"cutoff": before, "batch": size})
                removed = 0
                for _, key in found:  # under the rows' locks: a completion waits, then finds no row
                    if storage.head(key) is not None:
                        storage.delete(key)
                        removed += 1
                if found:
                    with c.cursor() as cur:
                        cur.execute(settle, ([video_id for video_id, _ in found],))
                return len(found), removed
            n, removed = self._in_transaction(conn, batch)
            rows, objects = rows + n, objects + removed
            if n < size:
                return rows, objects

    def _bucket(self):
        if self._storage is None:
            if self._storage_factory is None:
                raise RuntimeError("no storage configured")
            self._storage = self._storage_factory()
        return self._storage


def _fetch(conn, statement: str, params: dict) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def prune(urls: dict[str, str], retention: RetentionConfig, dry_run: bool, storage: Callable | None = None) -> list[Result]:
    """Every database in `urls` (domain → URL), in order; a failing one does not stop the others."""
    pruner = Pruner(retention, dry_run, storage)
    return [r for domain, url in urls.items() for r in pruner.database(domain, url)]
