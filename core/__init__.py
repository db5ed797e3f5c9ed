"""core: the ground layer every package may import (types, errors, io, registry, protocols,
config loading, hardware probes). It imports nothing of ours but itself.

Layers, lowest first: core <- connectors <- indexes <- hybrid <- apps (enforced by ``lint-imports``,
see ``.importlinter`` and tests/test_layers.py).
"""
