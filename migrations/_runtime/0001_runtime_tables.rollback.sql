-- loses: every idempotency key (duplicates sent later are applied again) and every unpublished outbox row
DROP TABLE outbox;
DROP TABLE idempotency_keys;
