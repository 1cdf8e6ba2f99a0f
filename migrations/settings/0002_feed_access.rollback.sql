DROP TABLE feed_access_limits;
DROP TABLE feed_visibility;
