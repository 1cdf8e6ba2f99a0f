"""The notify domain: each user's inbox of outcome events (worker.py: handlers and the inbox reads)."""
