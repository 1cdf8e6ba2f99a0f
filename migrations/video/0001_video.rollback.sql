-- loses: every video, feed post, comment, like and media metadata row
DROP TABLE likes;
DROP TABLE comments;
DROP TABLE feed_posts;
DROP TABLE media_metadata;
DROP TABLE videos;
