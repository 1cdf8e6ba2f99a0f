-- loses: every prompt and answer
DROP TABLE responses;
DROP TABLE prompts;
