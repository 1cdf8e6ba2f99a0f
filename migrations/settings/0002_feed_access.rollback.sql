-- loses: feed visibility (every feed reads as public again) and the passcode attempt limits
DROP TABLE feed_access_limits;
DROP TABLE feed_visibility;
