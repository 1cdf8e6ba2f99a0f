-- loses: which videos' sources prune deleted (a later prune deletes them again: a no-op in the bucket)
DROP INDEX videos_pending_upload;
DROP INDEX videos_source_kept;
ALTER TABLE videos DROP COLUMN source_deleted_at;
