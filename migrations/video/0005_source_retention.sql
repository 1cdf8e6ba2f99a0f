-- depends: 0004_comment_order
-- Retention (`workers prune`): a settled video's upload is deleted from the bucket
-- SOURCE_RETENTION_S after it settled, and source_deleted_at says it is gone, so each run finds
-- the sources still kept without asking the bucket about every video ever posted.
ALTER TABLE videos ADD COLUMN source_deleted_at timestamptz;
-- the two things prune looks for, oldest first: settled videos whose source is still kept, and
-- uploads never completed (both small: rows leave them as prune deals with them)
CREATE INDEX videos_source_kept ON videos (updated_at)
    WHERE status IN ('ready', 'failed') AND source_deleted_at IS NULL;
CREATE INDEX videos_pending_upload ON videos (updated_at) WHERE status = 'pending_upload';
