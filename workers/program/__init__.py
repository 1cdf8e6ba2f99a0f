"""The program domain: programs, workouts and workout sessions (worker.py: handlers; reads.py; sql.py)."""
