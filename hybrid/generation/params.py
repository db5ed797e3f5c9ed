"""Generation settings as every generator takes them: ``GenerationParams`` and the helpers around it.

    params = make_params(max_new_tokens=64, stop=["\\n\\n"])  # a bad value is a one-line InputError
    params = check_params(params)   # what each generator runs first: defaults for None, re-validated
    cut_at_stop("Paris.\\n\\nMore", params.stop)               # ("Paris.", True)

``GenerationParams`` itself (fields and ``validate``) is defined in ``core.protocols`` next to the
``Generator`` protocol that takes it, and is re-exported here.
"""

from __future__ import annotations

from typing import Any, Sequence

from core.errors import InputError
from core.protocols import GenerationParams

__all__ = ["GenerationParams", "check_params", "make_params", "cut_at_stop"]


def check_params(params: GenerationParams | None) -> GenerationParams:
    """Defaults for ``None``; re-runs ``GenerationParams.validate`` because a dataclass can be mutated
    after creation."""
    if params is None:
        return GenerationParams()
    if not isinstance(params, GenerationParams):
        raise InputError(f"params must be GenerationParams, got {type(params).__name__}")
    params.validate()
    return params


def make_params(**kwargs: Any) -> GenerationParams:
    """``GenerationParams(**kwargs)``, with a bad keyword or type a one-line ``InputError`` too."""
    try:
        return GenerationParams(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(str(e)) from None


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
