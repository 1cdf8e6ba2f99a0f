-- loses: the comments' arrival order (seq): threads read back by creation time
DROP INDEX comments_post_threads;
CREATE INDEX comments_post_threads ON comments (post_id, created_at, comment_id) WHERE parent_comment_id IS NULL;
ALTER TABLE comments DROP COLUMN seq;
