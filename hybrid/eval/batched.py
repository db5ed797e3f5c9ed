"""Batched generation for ``hybrid eval``: the prompts of one batch of questions, grouped by adapter and
sampling settings, generate as one batch each; a prompt the run already generated is reused."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable


def request_key(messages: Any, adapter: str | None, params_key: str) -> str:
    """Identity of one generation request: same messages, adapter and settings give the same answer."""
    blob = json.dumps([messages, adapter, params_key], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Prepared:
    """One question of a batch, ready to generate: its cache key and result row, the pipeline's
    ``Ready`` (strategy, prompt, strategy context, decision, notices) and the seconds preparing took."""

    q: Any
    key: str
    row: dict[str, Any]
    ready: Any
    seconds: float

    @property
    def params(self):
        """The prompt's own sampling settings, else its context's."""
        return self.ready.prompt.params or self.ready.ctx.params


def generate_groups(gen: Any, prepared: list[Prepared], groups: dict[tuple[str | None, str], list[int]],
                    generated: dict[str, tuple[Any, float]], tick: Callable[[int], None] | None
                    ) -> tuple[dict[int, Any], dict[int, float]]:
    """Generate each group of prepared prompts (one adapter, one set of sampling settings) as one
    batch: (index -> generation or the exception it raised, index -> seconds per row). A prompt
    this run already generated (``generated``, by request key) is reused, not generated again (auto
    routed to a strategy that answered the same question with the same prompt and settings). A
    batch that fails is retried one prompt at a time, so one bad prompt costs only its own row.
    ``tick(i)``, when given, is called as row ``i`` of a batch finishes."""
    texts: dict[int, Any] = {}
    gen_time: dict[int, float] = {}
    for (adapter, pkey), idx in groups.items():
        pp = prepared[idx[0]].params
        keys = {i: request_key(prepared[i].ready.prompt.messages, adapter, pkey) for i in idx}
        for i in [i for i in idx if keys[i] in generated]:
            texts[i], gen_time[i] = generated[keys[i]]
        idx = [i for i in idx if keys[i] not in generated]
        if not idx:
            continue
        t = time.perf_counter()
        on_row = {"on_row": (lambda j, idx=idx: tick(idx[j]))} if tick is not None else {}
        try:
            outs = gen.generate_batch([prepared[i].ready.prompt.messages for i in idx], adapter=adapter, params=pp,
                                      **on_row)
        except Exception:  # noqa: BLE001 - isolate the failing question, keep the others
            outs = []
            for i in idx:
                try:
                    outs.append(gen.generate(prepared[i].ready.prompt.messages, adapter=adapter, params=pp))
                except Exception as e:  # noqa: BLE001 - recorded on its row, the run goes on
                    outs.append(e)
        dt = (time.perf_counter() - t) / max(len(idx), 1)
        for i, o in zip(idx, outs):
            texts[i], gen_time[i] = o, dt
            if not isinstance(o, Exception):
                generated[keys[i]] = (o, dt)
    return texts, gen_time
