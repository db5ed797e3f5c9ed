"""A small, flat error hierarchy. Messages show the bad value.

Errors are translated only at the edges: the CLI prints ``error: <message>`` and exits 2,
the API maps them to HTTP status codes.
"""


class HybridError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(HybridError, ValueError):
    """A config file or override is invalid; the message names the key and the file."""


class InputError(HybridError, ValueError):
    """A user-supplied value is invalid (empty query, k <= 0, unknown filter...)."""


class SkipError(HybridError):
    """One source could not be loaded; the batch goes on and the skip is counted.

    ``reason`` is a short stable code (``empty``, ``encrypted``, ``corrupt``, ``too_large``...)
    used to group skips in the ingest summary.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ModelError(HybridError):
    """A model could not be found or loaded offline."""


class KnowledgeBaseError(HybridError):
    """Base for knowledge-base problems."""


class CorruptKnowledgeBaseError(KnowledgeBaseError):
    """Files on disk are missing, truncated or from different generations."""


class LockedError(KnowledgeBaseError):
    """Another writer holds the knowledge base's lock."""
