"""Generators, as a package: for now everything still lives in ``hybrid.generation.hf``.

``from hybrid.generation import X`` keeps working for every name that module had.
"""

from hybrid.generation.hf import (  # noqa: F401
    GenerationStream,
    HFGenerator,
    ScriptedCall,
    ScriptedGenerator,
    _generated_repetition_penalty,
    canonical,
    check_params,
    cut_at_stop,
    make_params,
)

__all__ = ["HFGenerator", "ScriptedGenerator", "GenerationStream", "check_params", "make_params", "cut_at_stop"]
