DROP TABLE messages;
DROP TABLE participants;
DROP TABLE conversations;
