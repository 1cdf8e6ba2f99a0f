-- depends: 0001_video
-- A deleted comment keeps its row (replies stay threaded under it) but not its text: the author
-- asked for the words to go. So the body may be empty, and must be, once deleted_at is set.
ALTER TABLE comments DROP CONSTRAINT comments_body_check;
ALTER TABLE comments ADD CONSTRAINT comments_body_check CHECK (
    CASE WHEN deleted_at IS NULL THEN length(body) BETWEEN 1 AND 2000 ELSE body = '' END);
