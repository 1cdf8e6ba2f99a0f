-- loses: every inbox and its items
DROP TABLE inbox_items;
DROP TABLE inboxes;
