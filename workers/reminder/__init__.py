"""The reminder domain: workout reminders and their occurrences (schedule.py: when each fires)."""
