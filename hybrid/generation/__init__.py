"""Generators: ``HFGenerator`` (transformers + peft multi-adapter) and the ``ScriptedGenerator`` fake.

    from hybrid.generation import HFGenerator, ScriptedGenerator, make_params
    gen = HFGenerator(system_prompt="You are ShopBot.")     # embedded SmolLM2, loads on warm_up()
    gen.generate([{"role": "user", "content": "Price of the X1?"}], params=make_params(max_new_tokens=32))

Both implement ``hybrid.protocols.Generator``; the fake is for fast unit tests of everything above the
model (strategies, router, pipeline, API), never a replacement for the real thing.

The package, by job:

- ``params``    ``GenerationParams`` (from ``hybrid.protocols``), ``check_params``, ``make_params``, ``cut_at_stop``
- ``stream``    ``GenerationStream``: text out of a generating thread, stop strings, cancellation
- ``hf``        ``HFGenerator``, its stopping criteria and generated-tokens-only repetition penalty
- ``scripted``  ``ScriptedGenerator``, the deterministic fake

Importing the package stays light: torch, transformers and peft load only when a model is used.
"""

from hybrid.generation.params import GenerationParams, check_params, cut_at_stop, make_params
from hybrid.generation.stream import GenerationStream
from hybrid.generation.hf import HFGenerator, _generated_repetition_penalty  # noqa: F401
from hybrid.generation.scripted import ScriptedCall, ScriptedGenerator, canonical  # noqa: F401
from hybrid.protocols import Generation  # noqa: F401 - importable from here before the split too

__all__ = ["HFGenerator", "ScriptedGenerator", "GenerationStream", "check_params", "make_params", "cut_at_stop"]
