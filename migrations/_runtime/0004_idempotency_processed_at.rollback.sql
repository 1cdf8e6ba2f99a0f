DROP INDEX IF EXISTS idempotency_keys_processed_at;
