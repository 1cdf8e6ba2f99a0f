-- loses: every reminder and each user's copy of the workout_reminders setting
DROP TABLE reminder_users;
DROP TABLE reminders;
