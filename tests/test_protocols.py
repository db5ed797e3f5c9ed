"""The real classes (and the fakes beside them) satisfy the role protocols in core/protocols.py:
every method a protocol declares exists and accepts the protocol's call (same parameter names and
kinds; extra parameters have defaults), and the cheap-to-build ones pass ``isinstance``."""

from __future__ import annotations

import inspect
import typing

import pytest

from core import protocols as P

P_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _members(proto: type) -> tuple[list[str], list[str]]:
    """(methods, data attributes) a protocol declares."""
    methods = [n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")]
    data = [n for n in typing.get_type_hints(proto) if not n.startswith("_")]
    return methods, data


def _accepts(want: inspect.Signature, have: inspect.Signature) -> list[str]:
    """What ``have`` lacks to accept every call ``want`` allows (empty when it accepts them all)."""
    problems = []
    params = dict(have.parameters)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name, p in want.parameters.items():
        if name == "self":
            continue
        q = params.pop(name, None)
        if q is None:
            if not (var_kw and p.kind is p.KEYWORD_ONLY):
                problems.append(f"no parameter {name!r}")
            continue
        if p.kind is p.POSITIONAL_OR_KEYWORD and q.kind is not q.POSITIONAL_OR_KEYWORD:
            problems.append(f"{name!r} must be positional-or-keyword")
        if p.kind is p.KEYWORD_ONLY and q.kind not in P_KINDS:
            problems.append(f"{name!r} must be accepted by keyword")
        if p.default is not p.empty and q.default is q.empty:
            problems.append(f"{name!r} needs a default")
    for name, q in params.items():
        if name != "self" and q.kind in P_KINDS and q.default is q.empty:
            problems.append(f"extra required parameter {name!r}")
    return problems


def _check(proto: type, cls: type) -> list[str]:
    methods, data = _members(proto)
    problems = []
    for name in methods:
        impl = inspect.getattr_static(cls, name, None)
        if impl is None:
            problems.append(f"{cls.__name__} has no {name}()")
            continue
        fn = impl.__func__ if isinstance(impl, (classmethod, staticmethod)) else impl
        for p in _accepts(inspect.signature(getattr(proto, name)), inspect.signature(fn)):
            problems.append(f"{cls.__name__}.{name}: {p}")
    init_src = inspect.getsource(cls.__init__) if "__init__" in vars(cls) else ""
    for name in data:
        if not hasattr(cls, name) and f"self.{name} =" not in init_src and f"self.{name}, " not in init_src:
            problems.append(f"{cls.__name__} has no attribute {name}")
    return problems


def _strategies():
    from hybrid.strategies import STRATEGIES

    return [STRATEGIES.get(n) for n in STRATEGIES.names()]


def _routers():
    from hybrid.routing import ROUTERS
    from hybrid.routing.fixed import FixedRouter

    return [ROUTERS.get(n) for n in ROUTERS.names()] + [FixedRouter]


def _cases():
    from hybrid.generation import HFGenerator, ScriptedGenerator
    from indexes.embed import HashEmbedder, SentenceTransformerEmbedder
    from indexes.kb import KnowledgeBase

    yield P.Embedder, SentenceTransformerEmbedder
    yield P.Embedder, HashEmbedder
    yield P.Generator, HFGenerator
    yield P.Generator, ScriptedGenerator
    yield P.Retriever, KnowledgeBase
    for cls in _strategies():
        yield P.Strategy, cls
    for cls in _routers():
        yield P.Router, cls


@pytest.mark.parametrize("proto,cls", list(_cases()), ids=lambda x: getattr(x, "__name__", str(x)))
def test_real_classes_accept_every_protocol_call(proto, cls):
    assert _check(proto, cls) == []


def test_the_protocols_declare_what_callers_call():
    assert {"build", "answer"} <= set(_members(P.Strategy)[0])
    assert {"load_adapter", "has_adapter", "generate", "stream"} <= set(_members(P.Generator)[0])
    assert {"search", "stats", "sync"} <= set(_members(P.Retriever)[0])


def test_a_missing_or_incompatible_method_is_caught():
    class NoBuild:
        name, cost = "x", 1.0

        def answer(self, query, ctx):
            ...

    class NarrowSync:
        def search(self, query, k=5, *, filters=None, mode="hybrid"): ...
        def stats(self): ...
        def sync(self, documents, *, force): ...

    assert _check(P.Strategy, NoBuild) == ["NoBuild has no build()"]
    assert _check(P.Retriever, NarrowSync) == ["NarrowSync.sync: no parameter 'prune'",
                                               "NarrowSync.sync: no parameter 'progress'",
                                               "NarrowSync.sync: extra required parameter 'force'"]


def test_cheap_instances_pass_isinstance(tmp_path):
    from hybrid.generation import ScriptedGenerator
    from indexes.config import IndexConfig
    from indexes.embed import HashEmbedder
    from indexes.kb import KnowledgeBase

    assert isinstance(HashEmbedder(), P.Embedder)
    assert isinstance(ScriptedGenerator(), P.Generator)
    with KnowledgeBase.create(tmp_path / "kb", IndexConfig(embedder="hash"), embedder=HashEmbedder()) as kb:
        assert isinstance(kb, P.Retriever)
    for cls in _strategies():
        assert isinstance(cls(), P.Strategy), cls
