-- loses: every user's and app settings
DROP FUNCTION merge_versions(jsonb, jsonb, text);
DROP FUNCTION merge_newer(jsonb, jsonb, jsonb, text);
DROP FUNCTION newer_keys(jsonb, jsonb, text);
DROP TABLE app_settings;
DROP TABLE user_settings;
