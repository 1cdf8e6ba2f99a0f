"""The ai domain: prompts to an OpenWebUI model and their answers (worker.py: handlers; openwebui.py: the HTTP client)."""
