-- fails while two users hold the same id for one consumer: delete one of each pair first
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (consumer, client_generated_id);
