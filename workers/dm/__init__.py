"""The dm domain: conversations and direct messages (worker.py: handlers and reads; sql.py: statements)."""
