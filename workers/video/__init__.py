"""The video domain: uploads, feed posts, comments and likes (worker.py: handlers; feed_reads.py: feed pages; sql.py)."""
