-- depends: 0003_rejections
-- transactional: false
-- `workers prune` deletes keys older than IDEMPOTENCY_RETENTION_S oldest first, a bounded batch
-- at a time: this index lets each batch touch only the rows it deletes, where a scan would read
-- the whole table per batch. Timestamps only grow, so inserts land on its rightmost page.
-- CONCURRENTLY (hence not transactional): the event path keeps writing keys while it builds.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idempotency_keys_processed_at ON idempotency_keys (processed_at);
