DROP TABLE responses;
DROP TABLE prompts;
