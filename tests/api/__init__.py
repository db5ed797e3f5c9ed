"""Tests of the HTTP service (apps/api) and ``hybrid serve``."""
