"""Generators: ``HFGenerator`` (transformers + peft multi-adapter) and the ``ScriptedGenerator`` fake.

    from hybrid.generation import HFGenerator, ScriptedGenerator, make_params
    gen = HFGenerator(system_prompt="You are ShopBot.")     # embedded SmolLM2, loads on warm_up()
    gen.generate([{"role": "user", "content": "Price of the X1?"}], params=make_params(max_new_tokens=32))

Both implement ``core.protocols.Generator``; the fake is for fast unit tests of everything above the
model (strategies, router, pipeline, API), never a replacement for the real thing.

The package, by job:

- ``params``    ``GenerationParams`` (from ``core.protocols``), ``check_params``, ``make_params``, ``cut_at_stop``
- ``stream``    ``GenerationStream``: text out of a generating thread, stop strings, cancellation
- ``hf``        ``HFGenerator``, its stopping criteria and generated-tokens-only repetition penalty
- ``scripted``  ``ScriptedGenerator``, the deterministic fake

``GENERATORS`` maps a backend name to its factory (the generator class), filled on import::

    GENERATORS.get("scripted")(context_window=4096)   # a ScriptedGenerator
    GENERATORS.names()                                 # ["hf", "scripted"]
    GENERATORS.get("nope")   # InputError: unknown generator backend 'nope'; known: hf, scripted

Registering a second, different factory under a taken name raises ``ValueError``.
``hybrid.assemble.make_generator`` picks an app's backend through this registry (``generation.model``
naming a registered backend; anything else is a model for ``hf``).

Importing the package stays light: torch, transformers and peft load only when a model is used.
"""

from core.registry import Registry

GENERATORS: Registry = Registry("generator backend")

# importing the modules fills the registry
from hybrid.generation.params import GenerationParams, check_params, cut_at_stop, make_params  # noqa: E402
from hybrid.generation.stream import GenerationStream  # noqa: E402
from hybrid.generation.hf import HFGenerator, _generated_repetition_penalty  # noqa: E402,F401
from hybrid.generation.scripted import ScriptedCall, ScriptedGenerator, canonical  # noqa: E402,F401
from core.protocols import Generation  # noqa: E402,F401 - importable from here before the split too

__all__ = ["GENERATORS", "HFGenerator", "ScriptedGenerator", "GenerationStream", "check_params", "make_params",
           "cut_at_stop"]
