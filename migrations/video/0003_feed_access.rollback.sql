DROP INDEX comments_parent;
DROP INDEX comments_post_threads;
DROP TABLE feed_access_grants;
DROP TABLE feed_visibility;
