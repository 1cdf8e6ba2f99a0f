DROP TABLE access_limits;
