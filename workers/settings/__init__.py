"""The settings domain: user and app settings, feed visibility and passcodes (worker.py: handlers; feed_access.py: passcode checks and their limits)."""
