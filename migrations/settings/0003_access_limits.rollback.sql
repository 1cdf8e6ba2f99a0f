-- loses: the per-account and per-feed attempt limits (counting starts over)
DROP TABLE access_limits;
