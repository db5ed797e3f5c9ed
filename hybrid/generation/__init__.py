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

- ``openai_backend``  ``OpenAIGenerator``: any OpenAI-compatible server (``remote``: its HTTP client,
  ``tokens``: prompt budgets counted locally or estimated)
- ``vllm_backend``    ``VLLMGenerator``: in-process vLLM on a GPU, imported only when used

``GENERATORS`` maps a backend name to its factory (the generator class), filled on import::

    GENERATORS.get("scripted")(context_window=4096)   # a ScriptedGenerator
    GENERATORS.names()      # ["hf", "openai", "scripted", "transformers", "vllm"]
    GENERATORS.get("nope")  # InputError: unknown generator backend 'nope'; known: hf, openai, ...

Registering a second, different factory under a taken name raises ``ValueError``.
``hybrid.assemble.make_generator`` picks an app's backend through this registry: ``generation.backend``
(``transformers``, the default and ``HFGenerator``'s second name; ``openai``; ``vllm``), and under
``transformers`` a ``generation.model`` naming a registered backend (``scripted``); anything else is a
model for ``hf``. docs/backends.md shows each backend's app.yaml.

Importing the package stays light: torch, transformers and peft load only when a model is used.
"""

from core.registry import Registry

GENERATORS: Registry = Registry("generator backend")

# importing the modules fills the registry
from hybrid.generation.params import GenerationParams, check_params, cut_at_stop, make_params  # noqa: E402
from hybrid.generation.stream import GenerationStream  # noqa: E402
from hybrid.generation.hf import HFGenerator  # noqa: E402
# the old module's name for the generated-tokens-only penalty
from hybrid.generation.controls import generated_repetition_penalty as _generated_repetition_penalty  # noqa: E402,F401
from hybrid.generation.scripted import ScriptedCall, ScriptedGenerator, canonical  # noqa: E402,F401
from hybrid.generation.openai_backend import OpenAIGenerator  # noqa: E402
from hybrid.generation.vllm_backend import VLLMGenerator  # noqa: E402

# the name app.yaml's generation.backend uses for the in-process generator; "hf" stays its old name
GENERATORS.add("transformers", HFGenerator)
from core.protocols import Generation  # noqa: E402,F401 - importable from here before the split too

__all__ = ["GENERATORS", "HFGenerator", "ScriptedGenerator", "OpenAIGenerator", "VLLMGenerator", "GenerationStream",
           "check_params", "make_params", "cut_at_stop"]
