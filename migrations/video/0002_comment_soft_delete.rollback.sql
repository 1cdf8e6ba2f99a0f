-- loses: the deletion times of deleted comments; their bodies become '[deleted]'
ALTER TABLE comments DROP CONSTRAINT comments_body_check;
-- the old check wants a non-empty body; the erased text is not coming back
UPDATE comments SET body = '[deleted]' WHERE deleted_at IS NOT NULL;
ALTER TABLE comments ADD CONSTRAINT comments_body_check CHECK (length(body) BETWEEN 1 AND 2000);
