"""The machine domain: notes on gym machines and equipment preferences (worker.py: handlers and reads; sql.py)."""
