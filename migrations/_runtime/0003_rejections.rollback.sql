-- loses: every rejection receipt (rejected events then read back as pending)
DROP TABLE rejections;
