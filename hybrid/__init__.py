"""hybrid: domain assistants that retrieve, tune, prompt with examples, and route between them.

Nothing heavy is imported here: models load lazily through each component's ``warm_up()``.
"""

__version__ = "0.1.0"
