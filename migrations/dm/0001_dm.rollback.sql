-- loses: every conversation, participant and message
DROP TABLE messages;
DROP TABLE participants;
DROP TABLE conversations;
