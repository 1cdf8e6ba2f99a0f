DROP TABLE inbox_items;
DROP TABLE inboxes;
