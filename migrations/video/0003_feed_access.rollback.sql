-- loses: the video worker's copy of feed visibility and every issued access grant
DROP INDEX comments_parent;
DROP INDEX comments_post_threads;
DROP TABLE feed_access_grants;
DROP TABLE feed_visibility;
