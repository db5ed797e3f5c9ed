"""What users run: ``apps.api`` (the HTTP service and chat page) and app directories (legal, shopping)."""
